"""Which model to load, and how: the ``model`` settings group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

DtypeName = Literal["float32", "float16", "bfloat16"]
AttnImplementation = Literal["eager", "sdpa"]
DTYPES: tuple[DtypeName, ...] = get_args(DtypeName)


@dataclass(frozen=True)
class ModelSettings:
    """A MusicGen checkpoint: ``name`` is a shipped short name (testbed, tiny), a local folder or a hub id.

    ``dtype=None`` keeps the checkpoint's dtype; ``hf_cache_dir=None`` reads hub ids from HF's own cache
    (``HF_HUB_CACHE``). Every process that loads the model (DDP ranks too) gets these same settings.
    """

    name: str = "testbed"
    device: str = "cpu"
    dtype: DtypeName | None = None
    allow_download: bool = False
    attn_implementation: AttnImplementation | None = None
    hf_cache_dir: str | None = None
