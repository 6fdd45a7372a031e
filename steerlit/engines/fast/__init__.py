"""The fast decode engine: :mod:`~steerlit.engines.fast.engine` (entry point and
:class:`~steerlit.engines.fast.engine.FastEngine`), :mod:`~steerlit.engines.fast.support` (when it reproduces
HF), :mod:`~steerlit.engines.fast.layers` (one decoder step), :mod:`~steerlit.engines.fast.state` (per-call
buffers and their cache), :mod:`~steerlit.engines.fast.graphs` (CUDA-graph replay)."""
