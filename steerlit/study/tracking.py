"""W&B set-up: online when the user has a key, offline otherwise, never waiting on the network.

All W&B files (run data, staged media, cache, logs) are kept inside the run folder by setting
``WANDB_DIR``, ``WANDB_DATA_DIR`` and ``WANDB_CACHE_DIR`` (audio inside tables is otherwise staged
under ``~/.local/share/wandb``). A run folder is one W&B run (:func:`folder_run_id`); each invocation on it leaves
an offline fragment, uploaded into that run, in order, with
``wandb sync --id "$(cat <run>/wandb/run_id)" <run>/wandb/wandb/offline-run-*`` (README).
:func:`log_evaluation` logs one evaluation stage under ``steer/<stage>/``: a samples table, the per-α and summary
tables, the plot, the summary scalars and, per (concept, method, layer, strategy) group, a pivot table of clips
across α (:mod:`steerlit.study.wandb_layout`). :func:`run_options` states how config and ``WANDB_*`` variables
combine.
"""

from __future__ import annotations

import contextlib
import math
import netrc
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlit.engines.grid import STEER_COLUMNS
from steerlit.files import atomic_write_text
from steerlit.study.layout import EvaluationPaths, RunLayout
from steerlit.study.records import AlphaRow, GridResult, SummaryRow
from steerlit.study.report import clip_name
from steerlit.study.settings import LoggerSettings
from steerlit.study.wandb_layout import audio_layout


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


ENV_OPTIONS = {  # W&B's standard variables, each read when the config leaves its option unset
    "project": "WANDB_PROJECT",
    "group": "WANDB_RUN_GROUP",
    "job_type": "WANDB_JOB_TYPE",
    "tags": "WANDB_TAGS",
    "notes": "WANDB_NOTES",
}


def run_options(
    settings: LoggerSettings, *, job_type: str = "study", group: str | None = None
) -> dict[str, Any]:
    """``project``, ``group``, ``job_type``, ``tags``, ``notes`` of a run. The rule: a value set in the config
    wins over the ``WANDB_*`` variable (:data:`ENV_OPTIONS`; ``WANDB_TAGS`` is comma-separated), which wins
    over the default (project ``steerlit``, the given ``group`` (the experiment), the given ``job_type``)."""
    defaults = {"project": "steerlit", "group": group, "job_type": job_type, "tags": (), "notes": None}
    options: dict[str, Any] = {}
    for key, var in ENV_OPTIONS.items():
        value = getattr(settings, key)
        if value in (None, "", ()):
            env = os.environ.get(var)
            if env:
                value = tuple(t.strip() for t in env.split(",") if t.strip()) if key == "tags" else env
            else:
                value = defaults[key]
        options[key] = list(value) if key == "tags" else value
    return options


RUN_ID_FILE = "run_id"  # in the run folder's wandb/: the W&B run id every invocation on the folder resumes


def folder_run_id(layout: RunLayout) -> dict[str, str]:
    """``id`` and ``resume`` for ``wandb.init``: one W&B run per run folder, whose id is kept in
    ``wandb/run_id`` and resumed by every later invocation (a rerun or a resume after a stop), so that the
    folder's offline runs all upload into that one run. Empty when a sweep agent chose the id
    (``WANDB_RUN_ID``)."""
    if os.environ.get("WANDB_RUN_ID"):
        return {}
    path = layout.wandb / RUN_ID_FILE
    run_id = path.read_text().strip() if path.exists() else ""
    if not run_id:
        run_id = secrets.token_hex(6)  # lower-case letters and digits, as W&B ids are
        atomic_write_text(path, run_id + "\n")
    return {"id": run_id, "resume": "allow"}


def make_wandb_logger(
    settings: LoggerSettings, layout: RunLayout, config: Mapping[str, Any], *, job_type: str = "study"
):
    """A Lightning ``WandbLogger`` (or None when logging is off) whose files live in the run folder; its
    project, group (default: the experiment), job type, tags and notes follow :func:`run_options`."""
    if settings.kind == "none":
        return None
    mode = resolve_mode(settings.mode)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger  # deferred: imports wandb

    save_dir = wandb_dirs(layout.root)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        **folder_run_id(layout),
        entity=settings.entity,
        name=settings.name or layout.name,
        save_dir=str(save_dir),
        offline=(mode == "offline"),
        mode=mode,
        config=dict(config),
        settings={"init_timeout": 30} if mode == "online" else None,
        **run_options(settings, job_type=job_type, group=config.get("experiment")),
    )
    logger.experiment  # noqa: B018  (start the run now, so its folder exists)
    return logger


@contextlib.contextmanager
def wandb_logger(
    settings: LoggerSettings,
    layout: RunLayout,
    config: Mapping[str, Any],
    *,
    job_type: str = "study",
    lead: bool = True,
) -> Iterator[Any]:
    """The W&B logger of one job (:func:`make_wandb_logger`) for a ``with`` block, its run finished on leaving,
    also after an error; None when logging is off or on a process that is not the ``lead`` (DDP rank 0)."""
    logger = make_wandb_logger(settings, layout, config, job_type=job_type) if lead else None
    try:
        yield logger
    finally:
        if logger is not None:
            logger.experiment.finish()


def rows_table(rows: Sequence[Mapping[str, Any]]):
    """A ``wandb.Table`` of dict rows (columns: the union of their keys; missing cells are None)."""
    import wandb  # deferred: wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


SAMPLE_SETTINGS = ("prompt", "seed", *STEER_COLUMNS[:-1])  # site_kind is left out
NOT_MEASURES = ("key", "wav", "n_terms", "prompt_index", "site_kind", "codes_sha1", "frames")


def samples_table(results: Sequence[GridResult], paths: EvaluationPaths, settings: LoggerSettings):
    """One row per clip: its readable name, key, settings, measurements and audio (for the clips of the first
    ``audio_prompts_per_group`` prompts, the ones in the group pivots)."""
    import wandb  # deferred: wandb

    rows = [r.to_row() for r in results]
    measures = [k for k in rows[0] if k not in SAMPLE_SETTINGS and k not in NOT_MEASURES]
    columns = ["name", "key", *SAMPLE_SETTINGS, *measures, "audio"]
    heard = sorted({r.prompt_index for r in results})[: max(settings.audio_prompts_per_group, 0)]
    order = sorted(
        rows, key=lambda r: (str(r["concept"]), str(r["method"]), str(r["layer"]), float(r["alpha"]))
    )
    table = wandb.Table(columns=columns)
    for row in order:
        audio = None
        if settings.log_audio and row["prompt_index"] in heard:
            audio = wandb.Audio(str(paths.wav(row["key"])), caption=clip_name(row))
        table.add_data(clip_name(row), *[row.get(c) for c in columns[1:-1]], audio)
    return table


def log_evaluation(
    run,
    stage: str,
    results: Sequence[GridResult],
    tables: tuple[Sequence[AlphaRow], Sequence[SummaryRow]],
    paths: EvaluationPaths,
    settings: LoggerSettings,
    attributes: Mapping[str, str],
) -> None:
    """Log one evaluation stage to the W&B ``run`` under ``steer/<stage>/``: the samples, per-α and summary
    tables, the plot, the summary scalars per group and each group's pivot table and clips
    (:func:`steerlit.study.wandb_layout.audio_layout`; ``attributes``: concept -> measured attribute)."""
    import wandb  # deferred: wandb

    per_alpha, summary = tables
    prefix = f"steer/{stage}"
    data = {
        f"{prefix}/samples": samples_table(results, paths, settings),
        f"{prefix}/per_alpha": rows_table([r.to_row() for r in per_alpha]),
        f"{prefix}/summary": rows_table([s.to_row() for s in summary]),
        f"{prefix}/attribute_vs_alpha": wandb.Image(str(paths.plot)),
        **audio_layout(stage, results, paths, settings, attributes),
    }
    for s in summary:
        name = f"{prefix}/{s.concept}/{s.method}/L{s.layer}/{s.strategy}"
        for k in SummaryRow.SCALARS:
            value = getattr(s, k)
            if not math.isnan(value):
                data[f"{name}/{k}"] = value
    run.log(data)
