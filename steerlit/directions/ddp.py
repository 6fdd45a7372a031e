"""A DDP strategy for loops without gradients (activation caching, evaluation).

Lightning's ``DDPStrategy`` wraps the LightningModule in ``DistributedDataParallel`` when fitting,
which refuses a module without trainable parameters. :class:`NoWrapDDPStrategy` keeps everything
else -- the process group (gloo on CPU), ``DistributedSampler``s, barriers and collectives -- but
never wraps. Gradients are then *not* synchronised: use it only for loops that do not train.

``start_method="fork"`` (the default here) runs the ranks as forked copies of the calling process,
so an already loaded MusicGen (whose EnCodec weight-norm parametrizations do not pickle) is shared;
with ``"spawn"`` load the model in ``LightningModule.setup()`` instead.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class NoWrapDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that never wraps the module in ``DistributedDataParallel``."""

    strategy_name = "ddp_nowrap"

    def __init__(self, *args, start_method: str = "fork", process_group_backend: str | None = None, **kwargs):
        super().__init__(
            *args, start_method=start_method, process_group_backend=process_group_backend, **kwargs
        )

    def configure_ddp(self) -> None:
        """Keep the plain LightningModule (no DistributedDataParallel)."""
        return None


def cpu_ddp_strategy(start_method: str = "fork") -> NoWrapDDPStrategy:
    """The no-wrap strategy with the gloo backend (CPU processes)."""
    return NoWrapDDPStrategy(start_method=start_method, process_group_backend="gloo")
