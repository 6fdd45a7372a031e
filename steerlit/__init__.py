"""steerlit: interpretable, direction-based steering of text-to-music models.

The public Python API (see the README's "Python API" section)::

    from steerlit import DirectionSet, load_model

    adapter = load_model("testbed")
    vec = DirectionSet.load("checkpoints/testbed/directions/testbed_tempo.safetensors").vector("diffmean", layer=2)
    with vec.apply(adapter.model, alpha=2, strategy="one_to_all"):
        audio = adapter.model.generate(**adapter.tokenize(["a calm piano piece"]), max_new_tokens=100)

The names below are resolved lazily (PEP 562): ``import steerlit`` defers torch, transformers and lightning
until a name that needs them is first used, so the CLI's ``--help`` and ``steerlit.__version__`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access; deferred: torch, transformers, lightning)
_LAZY: dict[str, str] = {
    # loading
    "load_model": "steerlit.models.loading",
    "load_adapter": "steerlit.models.loading",
    "ModelSettings": "steerlit.models.settings",
    "MusicGenAdapter": "steerlit.models.adapter",
    # recording
    "ActivationRecorder": "steerlit.intervene.record",
    # steering
    "Steering": "steerlit.intervene.steer",
    "Intervention": "steerlit.intervene.steer",
    "SteeringError": "steerlit.intervene.steer",
    "SteeringVector": "steerlit.intervene.vector",
    "inject": "steerlit.intervene.injection",
    # direction sets
    "DirectionSet": "steerlit.directions.io",
    "load_directions": "steerlit.directions.io",
    "save_directions": "steerlit.directions.io",
    # fitting
    "extract_activations": "steerlit.directions.extraction",
    "fit_directions": "steerlit.directions.fit",
    "diff_mean": "steerlit.directions.diffmean",
    # settings
    "compose": "steerlit.config",
    "StudySettings": "steerlit.study.settings",
    "GenerationSettings": "steerlit.engines.settings",
    # the main job
    "run_study": "steerlit.study.run",
}

__all__ = [
    "__version__",
    # loading
    "load_model",
    "load_adapter",
    "ModelSettings",
    "MusicGenAdapter",
    # recording
    "ActivationRecorder",
    # steering
    "Steering",
    "Intervention",
    "SteeringError",
    "SteeringVector",
    "inject",
    # direction sets
    "DirectionSet",
    "load_directions",
    "save_directions",
    # fitting
    "extract_activations",
    "fit_directions",
    "diff_mean",
    # settings
    "compose",
    "StudySettings",
    "GenerationSettings",
    # the main job
    "run_study",
]

if TYPE_CHECKING:  # static analysers and IDEs see the real objects; at run time they load lazily
    from steerlit.config import compose
    from steerlit.directions.diffmean import diff_mean
    from steerlit.directions.extraction import extract_activations
    from steerlit.directions.fit import fit_directions
    from steerlit.directions.io import DirectionSet, load_directions, save_directions
    from steerlit.engines.settings import GenerationSettings
    from steerlit.intervene.injection import inject
    from steerlit.intervene.record import ActivationRecorder
    from steerlit.intervene.steer import Intervention, Steering, SteeringError
    from steerlit.intervene.vector import SteeringVector
    from steerlit.models.adapter import MusicGenAdapter
    from steerlit.models.loading import load_adapter, load_model
    from steerlit.models.settings import ModelSettings
    from steerlit.study.run import run_study
    from steerlit.study.settings import StudySettings


def __getattr__(name: str):
    """PEP 562: import the defining module on first access and cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
