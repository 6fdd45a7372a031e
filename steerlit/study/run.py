"""The main job, :func:`run_study`: extract → fit → steer → measure → report, into one run folder.

* extract (:func:`steerlit.study.stages.extract`): each concept's probe-set activations, cached;
* fit (:func:`steerlit.study.stages.fit`): every direction method on each cache (with ``steer.every_n_epochs``,
  grids are also steered with the probes while they train, by the Lightning callbacks that ``probe_callbacks``
  makes: the CLI passes :meth:`steerlit.callbacks.steered_generation.SteeredGenerationCallback.for_probes`);
* steer, measure, report (:class:`steerlit.study.evaluation.Evaluation`): the steering grid with every
  concept's directions, its measurements and tables, written to the run folder and logged to W&B.

The run folder's layout is described once, in :mod:`steerlit.study.layout`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch.distributed as dist
from omegaconf import OmegaConf

from steerlit.directions.ddp import num_processes, uses_ddp
from steerlit.directions.io import DirectionSet
from steerlit.engines.results import ResultStore
from steerlit.files import atomic_write_text
from steerlit.metrics import warm_metrics
from steerlit.metrics.pool import exit_if_reimported_by_a_worker
from steerlit.models.loading import load_adapter
from steerlit.study.evaluation import Directions, Evaluation, GridPlan, steer
from steerlit.study.launch import RunLock, global_rank
from steerlit.study.layout import RunLayout
from steerlit.study.objective import best_summary
from steerlit.study.records import SummaryRow
from steerlit.study.settings import (
    ConfigError,
    StudySettings,
    as_dict,
    load_run_config,
    to_yaml,
)
from steerlit.study.stages import (
    PROBE_METHODS,
    check_model_settings,
    extract,
    fit,
    grid_plan,
    load_concept,
    load_concept_directions,
    probe_directions,
    progress,
)
from steerlit.study.tables import format_summary
from steerlit.study.tracking import wandb_logger


@dataclass(frozen=True)
class ProbeSteering:
    """What steering while one concept's probes train needs: the evaluation, its plan (steering with the probe
    methods), where it writes (``<concept>/epochs/<stage>/``), the probe's current directions, how often."""

    evaluation: Evaluation
    plan: GridPlan
    layout: RunLayout
    concept: str
    directions: Callable[[Any], Directions]  # the probe LightningModule -> {concept: DirectionSet}
    every_n_epochs: int
    wandb_run: Any = None


ProbeCallbacks = Callable[[ProbeSteering], Sequence[Any]]  # -> Lightning callbacks for the probe Trainer


ACTIVE_LOCKS: dict[str, RunLock] = {}  # run folder -> the lock this process holds on it


def start_run(settings: StudySettings) -> RunLayout:
    """Create (or reopen) the run folder ``output_dir/run_name``; on rank 0 lock it and write ``config.yaml``.

    Other ranks of the same run get the same folder and write nothing. Call :func:`end_run` when done."""
    layout = RunLayout.create(settings.output_dir, settings.run_name, settings.experiment)
    if global_rank() == 0:
        key = str(layout.root)
        if key not in ACTIVE_LOCKS:
            ACTIVE_LOCKS[key] = RunLock(layout.root)
        try:
            check_rerun(settings, layout)
        except ConfigError:
            end_run(layout)
            raise
        atomic_write_text(layout.config, to_yaml(settings))
    return layout


# The settings a grid's stored results depend on beyond their rows (engines.plan.store_settings, before weights).
GRID_SETTINGS = ("model.name", "model.dtype", "steer.seconds", "steer.guidance_scale", "steer.temperature")
GRID_SETTINGS += ("steer.top_k", "steer.engine")


def check_rerun(settings: StudySettings, layout: RunLayout) -> None:
    """Refuse, before anything is written, a rerun whose grid settings differ from those of the grid results
    the folder holds (the grid would refuse them only after extraction and fitting, with config.yaml already
    overwritten). A folder without results (a failed first batch) takes any settings."""
    results = layout.evaluation().results
    if not results.exists() or not layout.config.exists() or not ResultStore(results.parent).rows():
        return
    try:
        old = load_run_config(layout.config)
    except ConfigError:
        return  # rewritten below; the grid still checks its own settings.json
    new = OmegaConf.create(as_dict(settings))
    diff = {k: (OmegaConf.select(old, k), OmegaConf.select(new, k)) for k in GRID_SETTINGS}
    diff = {k: v for k, v in diff.items() if v[0] != v[1]}
    if diff:
        raise ConfigError(
            f"{layout.root} holds grid results generated with other settings {diff} (stored, requested); use "
            "another run_name= or the original settings."
        )


def end_run(layout: RunLayout) -> None:
    """Release the run folder's lock (a no-op on ranks that hold none)."""
    lock = ACTIVE_LOCKS.pop(str(layout.root), None)
    if lock is not None:
        lock.release()


def wait_for_rank_zero() -> None:
    """A barrier across the ranks of a multi-process run (nothing in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def run_study(settings: StudySettings, *, probe_callbacks: ProbeCallbacks | None = None) -> list[SummaryRow]:
    """Run the whole study; returns the summary rows (also printed, and written to ``summary.csv``).

    ``probe_callbacks``: needed with ``steer.every_n_epochs > 0`` (see the module docstring). In a
    multi-process run every rank calls it; rank 0 writes and logs, and returns the summary (others: ``[]``)."""
    exit_if_reimported_by_a_worker()  # a metric worker re-running an unguarded script: the work is the parent's
    every = settings.steer.every_n_epochs
    if every and probe_callbacks is None:
        raise ConfigError(
            f"steer.every_n_epochs={every} steers while probes train, which needs the Lightning callback: call "
            "run_study(settings, probe_callbacks=SteeredGenerationCallback.for_probes) "
            "(steerlit.callbacks.steered_generation; `steerlit run` does), or set steer.every_n_epochs=0."
        )
    check_model_settings(settings)  # layers and clip length, from config.json: before loading weights
    if num_processes(settings.trainer.devices) > 1 and uses_ddp(settings.trainer):
        warm_metrics()  # compile numba once, before any rank or worker starts
    L.seed_everything(settings.seed, verbose=False)
    layout = start_run(settings)
    lead = global_rank() == 0
    if lead:
        progress(f"run folder {layout.root}")
    try:
        with wandb_logger(settings.logger, layout, as_dict(settings), lead=lead) as logger:
            return run_stages(settings, layout, probe_callbacks, logger)
    finally:
        end_run(layout)


def run_stages(settings: StudySettings, layout: RunLayout, probe_callbacks, logger) -> list[SummaryRow]:
    """Load the model, extract and fit every concept, steer the grid; rank 0 measures and reports."""
    adapter = load_adapter(settings.model)
    progress(f"model {adapter.model_id}: {adapter.num_layers} layers x {adapter.hidden_size}")
    evaluation = Evaluation(
        adapter, settings.metrics, logger=settings.logger, model=settings.model, trainer=settings.trainer
    )
    with evaluation:  # its clip-measuring workers are stopped however the run ends
        return evaluate_concepts(settings, layout, probe_callbacks, logger, evaluation)


def prepare_concept(
    settings: StudySettings, layout: RunLayout, concept: str, probe_callbacks, logger, evaluation: Evaluation
) -> tuple[str, DirectionSet]:
    """Extract and fit one concept (probe-epoch grids steered through ``probe_callbacks``); its probe set's
    name and directions."""
    adapter, wandb_run = evaluation.adapter, logger.experiment if logger is not None else None
    probe_set = load_concept(concept, settings.probe)
    name = probe_set.name
    callbacks = []
    if settings.steer.every_n_epochs:
        plan = grid_plan(settings.steer, settings.probe, [name], adapter.num_layers, methods=PROBE_METHODS)
        every = settings.steer.every_n_epochs
        steering = ProbeSteering(evaluation, plan, layout, name, probe_directions(name), every, wandb_run)
        callbacks = list(probe_callbacks(steering))
    stage = (settings.extract, settings.probe, settings.trainer)
    extract(layout, probe_set, adapter, *stage, model=settings.model)
    # Every rank fits the same probes on the same cache (their metrics sync over the process group, so all
    # ranks must take part); the files are identical, written atomically; only rank 0 logs.
    tracking = {"callbacks": callbacks, "wandb_run": wandb_run, "logger": logger}
    fit(layout, name, settings.fit, settings.trainer, seed=settings.seed, **tracking)
    wait_for_rank_zero()
    return name, load_concept_directions(layout, [name], adapter, settings.steer)[name]


def evaluate_concepts(
    settings: StudySettings, layout: RunLayout, probe_callbacks, logger, evaluation: Evaluation
) -> list[SummaryRow]:
    """Extract and fit every concept, steer the grid with their directions; rank 0 measures and reports."""
    adapter, wandb_run = evaluation.adapter, logger.experiment if logger is not None else None
    directions: dict[str, DirectionSet] = {}
    for concept in settings.probe.concepts:
        name, direction_set = prepare_concept(settings, layout, concept, probe_callbacks, logger, evaluation)
        directions[name] = direction_set
    plan = grid_plan(settings.steer, settings.probe, list(directions), adapter.num_layers)
    if global_rank() > 0:  # this rank's share of the grid; rank 0 gathers, measures and writes
        steer(
            adapter,
            plan.rows(directions),
            directions,
            plan.steer.generation(),
            layout.evaluation(),
            metrics=settings.metrics,
            model=settings.model,
            trainer=settings.trainer,
        )
        return []
    progress("steering grid")
    summary = evaluation.run(plan, directions, layout.evaluation(), wandb_run=wandb_run)
    if wandb_run is not None:  # the objective W&B sweeps optimise: the best steered group, never a control's
        controls = set(settings.steer.controls) - set(settings.steer.methods)
        wandb_run.summary.update(best_summary([r for r in summary if r.method not in controls]))
    print(format_summary(summary), flush=True)
    progress(f"done: {layout.root}")
    return summary
