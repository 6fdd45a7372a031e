"""The run folder: everything a run writes, readable without W&B.

``runs/<name>/``: ``config.yaml`` (resolved), ``activations/<concept>/``, ``directions/<concept>.safetensors``
(plus ``directions.safetensors`` when there is one concept), ``probes/``, ``samples/*.wav``,
``results.jsonl``, ``metrics.csv``, ``summary.csv``, ``plots/*.png``, ``wandb/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def create(cls, output_dir: str | Path, name: str | None, prefix: str = "run") -> RunDir:
        name = name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        root = Path(output_dir) / name
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def sub(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def activations(self, concept: str) -> Path:
        return self.sub("activations", concept)

    def directions(self, concept: str) -> Path:
        return self.sub("directions") / f"{concept}.safetensors"

    @property
    def plots(self) -> Path:
        return self.sub("plots")

    @property
    def grid(self) -> Path:
        return self.root  # ResultStore writes samples/ and results.jsonl here

    @property
    def wandb(self) -> Path:
        return self.sub("wandb")
