"""Where work runs: the ``trainer`` settings group, shared by every Lightning loop (extraction, probe fitting, the
DDP grid) and read by the model loader for its device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainerSettings:
    """Lightning ``Trainer`` arguments: ``accelerator`` (cpu | gpu | cuda | auto), ``devices`` (an int, a list of
    ids, ``-1`` or ``auto``), ``strategy`` (auto | ddp | ddp_spawn | ddp_fork ...)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"  # auto | ddp (CPU: gloo processes)
    enable_progress_bar: bool = True
