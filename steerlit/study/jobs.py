"""W&B runs of the stage subcommands (``steerlit extract`` / ``fit`` / ``steer`` / ``generate``), and their lineage.

Each subcommand is one W&B run whose job type names it (``steerlit run`` is one run of job type ``study``, the
default of :func:`steerlit.study.tracking.wandb_logger`). The artifacts chain the stages: ``extract`` logs
each concept's ``activations`` (the cache index), ``fit`` uses them and logs the ``directions`` and ``probes``,
``steer`` uses the directions and logs the grid's ``report`` (its tables, clips and page). Each artifact's
metadata names its inputs, so the chain shows offline too; with a server the consumers also ``use_artifact``
them (:func:`steerlit.study.wandb_layout.use_artifacts`), and W&B draws extract → fit → steer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlit.study.launch import global_rank
from steerlit.study.layout import RunLayout
from steerlit.study.settings import StudySettings, as_dict
from steerlit.study.tracking import wandb_logger
from steerlit.study.wandb_layout import artifact_name, log_run_artifacts, use_artifacts


def job_logger(
    settings: StudySettings, layout: RunLayout, job_type: str, extra_config: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """The Lightning ``WandbLogger`` of one subcommand, for a ``with`` block (None when the logger is off, and on
    ranks other than 0); its files live in ``layout``'s folder, its config is the resolved settings (plus
    ``extra_config``), and its run is finished on leaving, also after an error (:func:`wandb_logger`)."""
    config = {**as_dict(settings), **dict(extra_config or {})}
    return wandb_logger(settings.logger, layout, config, job_type=job_type, lead=global_rank() == 0)


def artifact_names(concepts: Sequence[str], kind: str) -> list[str]:
    """The artifact names of ``kind`` (``activations``, ``directions``, ``probes``) for ``concepts``."""
    return [artifact_name(c, kind) for c in concepts]


def log_extracted(logger, layout: RunLayout, concepts: Sequence[str]) -> list[str]:
    """``extract``'s outputs: each concept's activation index (the names logged; nothing without a logger)."""
    if logger is None:
        return []
    return log_run_artifacts(logger.experiment, layout, concepts, kinds=("activations",))


def log_fitted(logger, layout: RunLayout, concepts: Sequence[str]) -> list[str]:
    """``fit``'s lineage: use the activation indexes, log the directions and probe weights."""
    if logger is None:
        return []
    use_artifacts(logger.experiment, artifact_names(concepts, "activations"))
    return log_run_artifacts(logger.experiment, layout, concepts, kinds=("directions", "probes"))


def use_directions(logger, concepts: Sequence[str]) -> list[str]:
    """``steer``'s inputs: the concepts' directions artifacts (used with a server; their names returned for the
    report artifact's ``inputs``, so the lineage also shows offline)."""
    names = artifact_names(concepts, "directions")
    if logger is not None:
        use_artifacts(logger.experiment, names)
    return names


def log_generated(logger, wav: Path, prompt: str) -> None:
    """``generate``'s output: the clip as ``generate/audio`` (captioned with its prompt)."""
    if logger is None:
        return
    import wandb  # deferred: wandb

    logger.experiment.log({"generate/audio": wandb.Audio(str(wav), caption=prompt)})
