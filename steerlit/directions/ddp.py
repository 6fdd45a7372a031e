"""A DDP strategy for loops without gradients (activation caching, evaluation).

Lightning's ``DDPStrategy`` wraps the LightningModule in ``DistributedDataParallel`` when fitting,
which refuses a module without trainable parameters. :class:`NoWrapDDPStrategy` keeps everything
else -- the process group (gloo on CPU), ``DistributedSampler``s, barriers and collectives -- but
never wraps. Gradients are then *not* synchronised: use it only for loops that do not train.

``start_method="fork"`` (the default here) runs the ranks as forked copies of the calling process,
so an already loaded MusicGen (whose EnCodec weight-norm parametrizations do not pickle) is shared;
with ``"spawn"`` load the model in ``LightningModule.setup()`` instead. :func:`loop_strategy` maps the
``trainer`` settings to such a strategy.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy

from steerlit.runtime import TrainerSettings

# How each Lightning DDP strategy name starts its ranks ("popen": the command line runs again per rank).
START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


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


def num_processes(devices) -> int:
    """Number of processes a ``devices`` argument names; ``"auto"`` and ``-1`` count as one (CPU default)."""
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        n = int(devices)
    except (TypeError, ValueError):
        return 1  # "auto": one CPU process
    return n if n > 0 else 1


def uses_ddp(trainer: TrainerSettings) -> bool:
    """Whether ``trainer``'s strategy is of Lightning's DDP family (``ddp``, ``ddp_spawn``, ``ddp_fork``)."""
    return str(trainer.strategy).startswith("ddp")


def spawns_ranks(trainer: TrainerSettings) -> bool:
    """True when ``trainer`` starts several ranks by spawning (``ddp_spawn``): they cannot receive a loaded model,
    so each must load it from its settings."""
    return START_METHODS.get(trainer.strategy) == "spawn" and num_processes(trainer.devices) > 1


def loop_strategy(trainer: TrainerSettings, *, shares_loaded_model: bool = False) -> str | DDPStrategy:
    """The Lightning strategy for a loop without gradients (activation caching) under ``trainer``.

    One process: ``trainer.strategy`` as it is. Several CPU processes: a :class:`NoWrapDDPStrategy` over gloo
    that starts its ranks as ``trainer.strategy`` says (``auto`` and ``ddp_fork``: fork, ``ddp_spawn``: spawn,
    ``ddp``: the command line again per rank). Several GPUs: the no-wrap strategy for the ``ddp*`` names, and
    Lightning's own choice for ``auto``. ``shares_loaded_model``: the caller hands the ranks a model loaded in
    this process, which spawned ranks cannot receive.
    """
    name = trainer.strategy
    if num_processes(trainer.devices) <= 1 or (name == "auto" and trainer.accelerator != "cpu"):
        return name
    start = "fork" if name == "auto" else START_METHODS.get(name)
    if start is None:
        return name  # another Lightning strategy: its own launcher
    if start == "spawn" and shares_loaded_model:
        raise ValueError(
            "A loaded model cannot be sent to spawned ranks (EnCodec's weight-norm parametrizations do not "
            "pickle): pass the model's ModelSettings so that each rank loads it, or use strategy=ddp_fork."
        )
    return NoWrapDDPStrategy(
        start_method=start, process_group_backend="gloo" if trainer.accelerator == "cpu" else None
    )
