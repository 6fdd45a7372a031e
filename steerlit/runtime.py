"""Where work runs: the ``trainer`` settings group, shared by every Lightning loop (extraction, probe fitting, the
DDP grid) and read by the model loader for its device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


LIGHTNING_INFO_LOGGERS = (  # rank_zero_info: accelerator banners ("GPU available: ..."), litlogger/litmodels tips
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def quiet_lightning() -> None:
    """Hide Lightning's info lines (accelerator banners, "💡 Tip: ... litlogger / litmodels") and its internal
    ``LeafSpec`` deprecation warning under torch >= 2.13; warnings and errors still show. Called before each
    ``Trainer`` is built (DDP ranks re-run the command, so each process calls it)."""
    import logging
    import warnings

    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads and the BLAS/OpenMP pools of numpy and scipy (threadpoolctl) at ``threads``
    inside the block, restored after it (None: left as they are)."""
    if threads is None:
        yield
        return
    import torch  # deferred: the trainer settings stay importable without torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)
