"""How every path generates: one :class:`GenerationSettings` for both engines, the local grid, the DDP grid
and ``steerlit generate``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from steerlit.engines.base import EngineName


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every generating path.

    ``seconds`` of audio per clip (converted to decoding steps by the model's frame rate and codebook delay);
    ``batch_size=None`` picks one from free memory; ``seeds`` are the per-row sampling seeds of a grid.
    """

    seconds: float = 2.0
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    batch_size: int | None = 16
    engine: EngineName = "hf"
    seeds: tuple[int, ...] = (0,)

    def generation(self) -> GenerationSettings:
        """Only the generation fields (subclasses such as the study's steer settings add grid axes)."""
        names = [f.name for f in dataclasses.fields(GenerationSettings)]
        return GenerationSettings(**{n: getattr(self, n) for n in names})

    def on_hf_engine(self) -> GenerationSettings:
        """The generation fields on the HF engine: what recorders, patching and gates need (they are hooks)."""
        return dataclasses.replace(self.generation(), engine="hf")
