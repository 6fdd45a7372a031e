"""Decode engines and the grid runner.

* :mod:`~steerlit.engines.select`: :func:`~steerlit.engines.select.generate`, the one entry point every
  generating path uses (picks the engine, logs a fallback);
* :mod:`~steerlit.engines.base`: the :class:`~steerlit.engines.base.Engine` interface, its request and output;
* :mod:`~steerlit.engines.hf` (HF ``generate``, the reference) and :mod:`steerlit.engines.fast` (the fast loop);
* :mod:`~steerlit.engines.sampling`: per-row sampling streams shared by both engines;
* :mod:`~steerlit.engines.grid`: grid rows; :mod:`~steerlit.engines.keys`: rows' content keys;
  :mod:`~steerlit.engines.plan`: batch plan and resume state;
  :mod:`~steerlit.engines.runner`: the local grid; :mod:`~steerlit.engines.distributed`: the DDP grid;
  :mod:`~steerlit.engines.results`: the result store; :mod:`~steerlit.engines.settings`: GenerationSettings.
"""
