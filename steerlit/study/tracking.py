"""W&B set-up: online when the user has a key, offline otherwise, never waiting on the network.

All W&B files (run data, staged media, cache, logs) are kept inside the run folder by setting
``WANDB_DIR``, ``WANDB_DATA_DIR`` and ``WANDB_CACHE_DIR`` (audio inside tables is otherwise staged
under ``~/.local/share/wandb``). Offline runs are uploaded later with ``wandb sync <run>/wandb/wandb/offline-run-*``.
:func:`log_evaluation` logs one evaluation stage: clips, a samples table, the per-α and summary tables, the plot
and the summary scalars under ``steer/<stage>/``.
"""

from __future__ import annotations

import math
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlit.engines.grid import STEER_COLUMNS
from steerlit.study.layout import EvaluationPaths, RunLayout
from steerlit.study.records import AlphaRow, GridResult, SummaryRow
from steerlit.study.settings import LoggerSettings


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
    root = RunLayout(Path(run_root)).wandb
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


def make_wandb_logger(settings: LoggerSettings, layout: RunLayout, config: Mapping[str, Any]):
    """A Lightning ``WandbLogger`` (or None when logging is off) whose files live in the run folder."""
    if settings.kind == "none":
        return None
    mode = resolve_mode(settings.mode)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger  # deferred: imports wandb

    save_dir = wandb_dirs(layout.root)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=settings.project,
        entity=settings.entity,
        name=settings.name or layout.name,
        tags=list(settings.tags),
        save_dir=str(save_dir),
        offline=(mode == "offline"),
        mode=mode,
        config=dict(config),
        settings={"init_timeout": 30} if mode == "online" else None,
    )
    logger.experiment  # noqa: B018  (start the run now, so its folder exists)
    return logger


def rows_table(rows: Sequence[Mapping[str, Any]]):
    """A ``wandb.Table`` of dict rows (columns: the union of their keys; missing cells are None)."""
    import wandb  # deferred: wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


SAMPLE_SETTINGS = ("prompt", "seed", *STEER_COLUMNS[:-1])  # site_kind is left out
NOT_MEASURES = ("key", "wav", "n_terms", "prompt_index", "site_kind", "codes_sha1", "frames")


def samples_table(results: Sequence[GridResult], paths: EvaluationPaths, settings: LoggerSettings):
    """One row per clip (settings, measurements, audio for the first ``max_audio``); and those clips."""
    import wandb  # deferred: wandb

    rows = [r.to_row() for r in results]
    measures = [k for k in rows[0] if k not in SAMPLE_SETTINGS and k not in NOT_MEASURES]
    columns = ["key", *SAMPLE_SETTINGS, *measures, "audio"]
    table, clips = wandb.Table(columns=columns), []
    order = sorted(
        rows, key=lambda r: (str(r["concept"]), str(r["method"]), str(r["layer"]), float(r["alpha"]))
    )
    for i, row in enumerate(order):
        audio = None
        if settings.log_audio and i < settings.max_audio:
            caption = (
                f"{row['prompt']} | {row['concept'] or 'reference'} {row['method'] or ''} "
                f"L{row['layer']} α={row['alpha']} {row['strategy'] or ''} seed={row['seed']}"
            )
            audio = wandb.Audio(str(paths.wav(row["key"])), caption=caption)
            clips.append(audio)
        table.add_data(*[row.get(c) for c in columns[:-1]], audio)
    return table, clips


def log_evaluation(
    run,
    stage: str,
    results: Sequence[GridResult],
    per_alpha: Sequence[AlphaRow],
    summary: Sequence[SummaryRow],
    paths: EvaluationPaths,
    settings: LoggerSettings,
) -> None:
    """Log one evaluation stage to the W&B ``run`` under ``steer/<stage>/``."""
    import wandb  # deferred: wandb

    samples, clips = samples_table(results, paths, settings)
    prefix = f"steer/{stage}"
    data = {
        f"{prefix}/samples": samples,
        f"{prefix}/per_alpha": rows_table([r.to_row() for r in per_alpha]),
        f"{prefix}/summary": rows_table([s.to_row() for s in summary]),
        f"{prefix}/attribute_vs_alpha": wandb.Image(str(paths.plot)),
    }
    if clips:
        data[f"{prefix}/audio"] = clips
    for s in summary:
        name = f"{prefix}/{s.concept}/{s.method}/L{s.layer}/{s.strategy}"
        for k in SummaryRow.SCALARS:
            value = getattr(s, k)
            if not math.isnan(value):
                data[f"{name}/{k}"] = value
    run.log(data)
