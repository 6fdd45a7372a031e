"""How clips are measured: the ``metrics`` settings group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from steerlit.metrics.beat_confidence import TempoEstimator

QualityKind = Literal["kad", "frechet", "none"]
QUALITY_KINDS: tuple[str, ...] = get_args(QualityKind)


@dataclass(frozen=True)
class TempoSettings:
    start_bpm: float = 120.0
    std_bpm: float = 1.0  # prior width in octaves (librosa default)
    min_bpm: float = 40.0
    max_bpm: float = 240.0
    # The default stays librosa although madmom measured better on real music (octave-aware within 4 %: madmom
    # 100 %, librosa with std_bpm 1.5 87 %): madmom is an optional extra whose bundled models are CC BY-NC-SA 4.0,
    # so a default run must not depend on what is installed. The real-music config (configs/metrics/default.yaml)
    # chooses estimator=auto: madmom where the beat extra is installed, else librosa with std_bpm 1.5.
    estimator: TempoEstimator = "librosa"
    beat_this_checkpoint: str | None = None  # local Beat This! checkpoint file (estimator=beat_this only)
    min_confidence: float | None = (
        None  # beat confidence below which bpm is nan; None: the estimator's measured 0.1
    )


@dataclass(frozen=True)
class MetricsSettings:
    tempo: TempoSettings = field(default_factory=TempoSettings)
    attributes: dict[str, str] = field(default_factory=dict)  # concept -> attribute (default by name)
    clap_path: str | None = None  # local CLAP folder for CLAP score and embedding FAD
    # Quality of each α's clips against their α = 0 twins: kad (unbiased kernel distance on loudness-normalised DSP
    # features, with a noise floor), frechet (the DSP-feature Fréchet distance), none.
    quality: QualityKind = "kad"
    # Processes that measure clips while the grid generates (spawned: a native crash in a metric gives that clip nan
    # values and a reason, never a dead run); 0 measures in the grid's own process (debugging).
    workers: int = 1
