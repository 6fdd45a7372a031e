"""How activations are cached and directions fitted: the ``extract`` and ``fit`` settings groups."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlit.directions.extraction import Source
from steerlit.directions.fit import METHODS, Method
from steerlit.directions.probes import ProbeScale
from steerlit.intervene.record import PooledReduction
from steerlit.models.settings import DtypeName


@dataclass(frozen=True)
class ExtractSettings:
    """Which sites are cached (``site_kind`` at ``layers``; None: every layer), from what (``source``), reduced
    how (``position``: ``first`` for ``prompt``; ``first|mean|last`` over the decoding steps of ``generate``).
    ``gen_steps``/``guidance_scale``: the short greedy generation of ``source="generate"``. ``batch_size``:
    examples per shard. ``dtype``: storage dtype of the cache."""

    site_kind: str = "resid_post"
    layers: tuple[int, ...] | None = None  # None: every layer
    source: Source = "prompt"  # prompt (text-only prefill step) | generate (short generation)
    position: PooledReduction = "first"
    gen_steps: int = 16
    guidance_scale: float = 3.0  # classifier-free guidance of the generate source
    batch_size: int = 16
    dtype: DtypeName = "float32"  # storage dtype of the cache


@dataclass(frozen=True)
class ProbeTrainSettings:
    """How the linear probes are trained: the saved direction's scale, input standardisation, then the optimiser."""

    scale: ProbeScale = "diffmean"  # unit | diffmean
    standardize: bool = True
    max_epochs: int = 30
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 64
    val_every_n_epochs: int = 1  # validation (and a steering callback's epoch ends) every N epochs


@dataclass(frozen=True)
class FitSettings:
    methods: tuple[Method, ...] = METHODS
    probe: ProbeTrainSettings = field(default_factory=ProbeTrainSettings)
