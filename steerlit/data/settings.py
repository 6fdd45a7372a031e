"""Which probe sets a study reads, and how they are split: the ``probe`` settings group."""

from __future__ import annotations

from dataclasses import dataclass

from steerlit.data.probe_set import ExampleForm


@dataclass(frozen=True)
class ProbeSettings:
    concepts: tuple[str, ...] = ("tempo", "timbre")  # probe-set names or paths
    eval_set: str = "neutral"
    form: ExampleForm = "poles"
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    max_per_pole: int | None = None  # use only the first N prompts per pole (quick runs)
    seed: int = 0
