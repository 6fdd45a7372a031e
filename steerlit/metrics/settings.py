"""How clips are measured: the ``metrics`` settings group."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TempoSettings:
    start_bpm: float = 120.0
    std_bpm: float = 1.0  # prior width in octaves (librosa default)
    min_bpm: float = 40.0
    max_bpm: float = 240.0


@dataclass(frozen=True)
class MetricsSettings:
    tempo: TempoSettings = field(default_factory=TempoSettings)
    attributes: dict[str, str] = field(default_factory=dict)  # concept -> attribute (default by name)
    clap_path: str | None = None  # local CLAP folder for CLAP score and embedding FAD
    quality: bool = True  # DSP-feature Fréchet distance to the α=0 references
