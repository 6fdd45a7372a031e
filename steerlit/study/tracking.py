"""W&B set-up: online when the user has a key, offline otherwise, never waiting on the network.

All W&B files (run data, staged media, cache, logs) are kept inside the run folder by setting
``WANDB_DIR``, ``WANDB_DATA_DIR`` and ``WANDB_CACHE_DIR`` (audio inside tables is otherwise staged
under ``~/.local/share/wandb``). Offline runs are uploaded later with ``wandb sync <run>/wandb/wandb/offline-run-*``.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def has_wandb_key() -> bool:
    """A W&B API key in the environment or ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str) -> str:
    """``auto`` → ``online`` with a key (and WANDB_MODE not forcing otherwise), else ``offline``."""
    env = os.environ.get("WANDB_MODE")
    if mode == "auto":
        if env in ("offline", "disabled", "dryrun"):
            return "offline" if env == "dryrun" else env
        return "online" if has_wandb_key() else "offline"
    return mode


def wandb_dirs(run_root: Path) -> Path:
    """Point every W&B folder inside ``run_root/wandb`` (for this process and its children)."""
    root = Path(run_root) / "wandb"
    for var, sub in (
        ("WANDB_DIR", ""),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        path = root / sub if sub else root
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    return root


def make_wandb_logger(logger_cfg, run_root: Path, run_name: str, config: dict):
    """A Lightning ``WandbLogger`` (or None when logging is off) whose files live in the run folder."""
    if logger_cfg.kind == "none":
        return None
    mode = resolve_mode(logger_cfg.mode)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    save_dir = wandb_dirs(run_root)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        name=logger_cfg.name or run_name,
        tags=list(logger_cfg.tags),
        save_dir=str(save_dir),
        offline=(mode == "offline"),
        mode=mode,
        config=config,
        settings={"init_timeout": 30} if mode == "online" else None,
    )
    logger.experiment  # noqa: B018  (start the run now, so its folder exists)
    return logger
