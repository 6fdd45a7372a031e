"""How activations are cached and directions fitted: the ``extract`` and ``fit`` settings groups."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlit.directions.extraction import Source
from steerlit.directions.fit import METHODS, Method, ProbeScale
from steerlit.intervene.record import PooledReduction
from steerlit.models.settings import DtypeName


@dataclass(frozen=True)
class ExtractSettings:
    site_kind: str = "resid_post"
    layers: tuple[int, ...] | None = None  # None: every layer
    source: Source = "prompt"  # prompt (text-only prefill step) | generate (short generation)
    position: PooledReduction = "first"
    gen_steps: int = 16
    batch_size: int = 16
    dtype: DtypeName = "float32"  # storage dtype of the cache


@dataclass(frozen=True)
class ProbeTrainSettings:
    max_epochs: int = 30
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 64
    standardize: bool = True
    scale: ProbeScale = "diffmean"  # unit | diffmean


@dataclass(frozen=True)
class FitSettings:
    methods: tuple[Method, ...] = METHODS
    probe: ProbeTrainSettings = field(default_factory=ProbeTrainSettings)
