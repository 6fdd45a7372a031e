"""The Lightning side of every testbed training stage: its Trainer and logger, resuming from the newest
``last*.ckpt`` (weights only), and the ``train_stats.json`` a stage leaves next to what it saved.

A stage's checkpoints live in ``run_dir/<stage>/checkpoints``; re-running the stage's command resumes
from the newest ``last*.ckpt`` there (:func:`fit_resuming`).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from steerlit.files import atomic_write_text

# Lightning >= 2.6 takes ``weights_only`` in ``Trainer.fit``; older versions load with torch's default
# (full unpickling on torch 2.4/2.5).
FIT_TAKES_WEIGHTS_ONLY = "weights_only" in inspect.signature(L.Trainer.fit).parameters


def stage_logger(cfg: DictConfig, stage: str) -> WandbLogger | bool:
    """A Lightning logger per config: ``False`` (none) or an offline W&B logger living inside run_dir."""
    if cfg.logger == "none":
        return False
    if cfg.logger != "wandb":
        raise ValueError(f"logger must be 'none' or 'wandb', got {cfg.logger!r}")
    wandb_dir = Path(cfg.run_dir) / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = "offline"
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.environ[var] = str(wandb_dir.resolve())
    return WandbLogger(
        project="steerlit-testbed",
        name=f"{Path(cfg.run_dir).name}-{stage}",
        save_dir=str(wandb_dir),
        offline=True,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def stage_trainer(
    cfg: DictConfig, stage_cfg: DictConfig, stage: str, clip_gradients: bool = True
) -> tuple[L.Trainer, Path]:
    """The stage's Trainer and its checkpoint folder. ``clip_gradients=False`` for modules that clip
    their own (manual optimisation)."""
    ckpt_dir = Path(cfg.run_dir) / stage / "checkpoints"
    logger = stage_logger(cfg, stage)
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=stage_cfg.checkpoint_every, save_last=True),
        TQDMProgressBar(refresh_rate=10),  # readable in a log file, unlike the rich bar
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=stage_cfg.max_steps,
        max_epochs=-1,
        max_time={"minutes": stage_cfg.max_time_min},
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(Path(cfg.run_dir) / stage),
        log_every_n_steps=10,
        gradient_clip_val=stage_cfg.get("grad_clip", 1.0) if clip_gradients else None,
        enable_progress_bar=True,
        enable_model_summary=True,
    ), ckpt_dir


def last_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest ``last*.ckpt`` in ``ckpt_dir`` (None if there is none). Lightning writes ``last-v1.ckpt``
    next to a ``last.ckpt`` it did not write itself, e.g. when a run folder was copied and resumed."""
    lasts = list(Path(ckpt_dir).glob("last*.ckpt"))
    return str(max(lasts, key=lambda p: p.stat().st_mtime)) if lasts else None


def fit_resuming(trainer: L.Trainer, module: L.LightningModule, data, ckpt_dir: str | Path) -> str | None:
    """``trainer.fit(module, data)``, resuming from :func:`last_checkpoint` of ``ckpt_dir`` if there is one.

    The checkpoint is loaded weights-only (tensors and plain containers; no pickled objects are
    executed), whatever torch's default: through ``Trainer.fit(weights_only=True)`` on Lightning >= 2.6,
    else by a weights-only ``torch.load`` that must succeed before Lightning loads the file.
    Returns the checkpoint resumed from (None: a fresh start). Raises ``ValueError`` for a checkpoint
    that holds more than weights.
    """
    ckpt = last_checkpoint(ckpt_dir)
    try:
        if FIT_TAKES_WEIGHTS_ONLY:
            trainer.fit(module, data, ckpt_path=ckpt, weights_only=True)
        else:
            if ckpt is not None:  # Lightning < 2.6 would load it with torch's default: check it first
                torch.load(ckpt, map_location="cpu", weights_only=True)
            trainer.fit(module, data, ckpt_path=ckpt)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{ckpt} holds objects that only a full unpickling would load, so it is not resumed: move it "
            f"out of {ckpt_dir} to train this stage from its start ({err})"
        ) from err
    return ckpt


def train_seconds(trainer: L.Trainer, t0: float) -> float:
    """Training wall time summed over resumed runs (Lightning's Timer keeps it in the checkpoint when
    ``max_time`` is set), else the time since ``t0``."""
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return float(timers[0].time_elapsed("train")) if timers else time.time() - t0


def save_train_stats(trainer: L.Trainer, t0: float, out: Path, stage: str, **extra) -> None:
    """``out/train_stats.json`` (atomic): the last logged metrics, steps, training seconds and ``extra``."""
    stats = {k: float(v) for k, v in trainer.callback_metrics.items()}
    stats.update(steps=trainer.global_step, seconds=train_seconds(trainer, t0), **extra)
    # the shipped stats' format (no final newline; a NaN loss is written as NaN, not refused)
    atomic_write_text(out / "train_stats.json", json.dumps(stats, indent=2))
    print(f"[{stage}] saved {out}: {stats}")


def finish_wandb() -> None:
    """End the stage's W&B run, if one is open (so that the next stage starts its own)."""
    try:
        import wandb  # deferred: wandb (optional, heavy)
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()
