"""The evaluation, plain code (no Lightning): grid → generations → measurements → tables → run folder and W&B.

It is the steer → measure → report part of :func:`steerlit.study.run.run_study`, and what
:class:`steerlit.callbacks.steered_generation.SteeredGenerationCallback` runs while probes train:

* :func:`steer`: every row of a :class:`GridPlan` (layers × α × method × strategy over the evaluation prompts
  and seeds, plus the α = 0 references), generated in batches (:func:`steerlit.engines.runner.run_grid`, or
  sharded over processes by :func:`steerlit.engines.distributed.run_grid_distributed` with the full model
  settings), each clip measured as it is generated;
* :func:`measure`: CLAP scores (with a CLAP model), the per-α table with the quality against the references, the
  steerability summary (:class:`Evaluation` adds each group's perturbation size ‖α·v‖/‖h‖,
  :mod:`steerlit.study.perturbation`);
* :func:`report`: ``metrics.csv``, ``per_alpha.csv``, ``summary.csv`` and the attribute-vs-α plot in the
  evaluation's folder (:class:`steerlit.study.layout.EvaluationPaths`); :class:`Evaluation` also logs to W&B;
* :func:`compare_layers` (the final grid of a run folder): the joined per-layer table and plots, agreement beside
  steering and quality (:mod:`steerlit.study.layer_comparison`);
* :func:`finish_run_folder` (the final stage of a run folder): ``report.html``, and in W&B the artifacts and
  the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerlit.directions.ddp import uses_ddp
from steerlit.engines.distributed import run_grid_distributed
from steerlit.engines.grid import GridRow, build_grid
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import run_grid
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_write_csv
from steerlit.metrics.clap import ClapScorer
from steerlit.metrics.kernel_distance import kernel_distance
from steerlit.metrics.numba_cache import warm_metrics
from steerlit.metrics.pool import ClipMeasurer, MeasurerSpec, attribute_measure
from steerlit.metrics.quality import dsp_frechet
from steerlit.metrics.settings import MetricsSettings
from steerlit.models.settings import ModelSettings
from steerlit.runtime import TrainerSettings
from steerlit.study.layer_comparison import layer_comparison_rows, write_layer_comparison
from steerlit.study.layout import FINAL_STAGE, EvaluationPaths, RunLayout
from steerlit.study.perturbation import Directions, add_perturbation
from steerlit.study.records import AlphaRow, GridResult, SummaryRow
from steerlit.study.report import write_report
from steerlit.study.settings import LoggerSettings, SteerSettings
from steerlit.study.tables import (
    QualityFn,
    attribute_for,
    per_alpha_table,
    plot_attribute_vs_alpha,
    summarize,
    usable,
)
from steerlit.study.tracking import log_evaluation
from steerlit.study.wandb_layout import layer_comparison_layout, log_report, log_run_artifacts

ONE_PROCESS = TrainerSettings()  # the grid in this process
DEFAULT_LOGGER = LoggerSettings()


@dataclass(frozen=True)
class GridPlan:
    """What an evaluation generates: the grid of ``steer`` over these prompts, concepts and source layers.

    ``methods=None`` steers with ``steer.methods``; a grid steered while probes train names the probes."""

    steer: SteerSettings
    prompts: tuple[str, ...]
    concepts: tuple[str, ...]
    layers: tuple[int, ...]
    methods: tuple[str, ...] | None = None

    def rows(self, directions: Directions) -> list[GridRow]:
        """The grid rows, steering with the wanted methods that every concept has directions for."""
        wanted = list(self.methods or self.steer.methods)
        methods = [m for m in wanted if all(m in directions[c].methods for c in self.concepts)]
        if not methods:
            raise ValueError(
                f"None of the steering methods {wanted} have directions for {list(self.concepts)}."
            )
        s = self.steer
        return build_grid(
            list(self.prompts),
            list(s.seeds),
            concepts=list(self.concepts),
            methods=methods,
            layers=list(self.layers),
            alphas=list(s.alphas),
            strategies=list(s.strategies),
            operator=s.operator,
            schedule=s.schedule if isinstance(s.schedule, str) else dict(s.schedule),
            half=s.half,
        )


@dataclass(frozen=True)
class Tables:
    """What :func:`measure` makes of a grid: the per-α table and the steerability summary."""

    per_alpha: list[AlphaRow]
    summary: list[SummaryRow]
    degenerate: int = 0  # grid rows left out of both (non-finite or constant output)


def grid_devices(trainer: TrainerSettings) -> int:
    """Processes for the steering grid: ``trainer.devices`` under DDP (:func:`uses_ddp`), else 1."""
    devices = trainer.devices
    if not uses_ddp(trainer) or not isinstance(devices, int):
        return 1
    if devices == -1:
        return max(1, torch.cuda.device_count())
    return devices


def steer(
    adapter,
    rows: Sequence[GridRow],
    directions: Directions,
    generation: GenerationSettings,
    paths: EvaluationPaths,
    *,
    metrics: MetricsSettings,
    model: ModelSettings | None = None,
    trainer: TrainerSettings = ONE_PROCESS,
    measurer: ClipMeasurer | None = None,
) -> list[GridResult]:
    """Generate and measure every row into ``paths.folder`` (resumable); one result per unique row, in order.

    Under a DDP ``trainer`` the rows are sharded over processes, each loading ``model`` with every setting
    and measuring its clips in ``metrics.workers`` processes of its own. In one process, ``measurer`` measures
    the clips in its workers while the grid generates (None: in this process)."""
    metrics_fn = attribute_measure(metrics)  # every attribute of one clip; it pickles for the DDP ranks
    devices = grid_devices(trainer)
    if devices > 1:  # rank 0 gathers and writes the store
        if model is None:
            raise ValueError("A grid over several processes needs the model settings to load on each rank.")
        records = run_grid_distributed(
            model,
            rows,
            directions,
            generation,
            out_dir=paths.folder,
            devices=devices,
            accelerator=trainer.accelerator,
            strategy=trainer.strategy,  # ddp: joins the ranks the command line was re-run as
            measurer=MeasurerSpec(metrics_fn, workers=metrics.workers),
            progress=trainer.enable_progress_bar,
        )
    else:
        store = ResultStore(paths.folder)
        records = run_grid(
            adapter,
            rows,
            directions,
            generation,
            store=store,
            metrics_fn=metrics_fn,
            measurer=measurer,
            progress=trainer.enable_progress_bar,
        )
    return [GridResult.from_record(r) for r in records]


def add_clap_scores(clap, results: Sequence[GridResult], store: ResultStore, sample_rate: int) -> None:
    """Each clip's CLAP score against its prompt, into ``result.clap_score``."""
    audios = [store.read_wav(r.key)[0] for r in results]
    scores = clap.clap_score(audios, sample_rate, [r.prompt for r in results])
    for result, score in zip(results, scores):
        result.clap_score = float(score)


def _set_distance(kind: str, steered: list, reference: list, sample_rate: int) -> dict[str, float]:
    """``kad`` (+ ``kad_noise_floor``: the 95 % quantile of two disjoint α = 0 halves, ``kad_n``) or
    ``dsp_frechet``."""
    if kind != "kad":
        return {"dsp_frechet": float(dsp_frechet(steered, reference, sample_rate))}
    if min(len(steered), len(reference)) < 2:
        return {"kad": float("nan"), "kad_noise_floor": float("nan"), "kad_n": len(steered)}
    kad = kernel_distance(steered, reference, sample_rate)
    return {"kad": kad.value, "kad_noise_floor": kad.noise_floor_high, "kad_n": kad.n_steered}


def quality_against_references(
    store: ResultStore, sample_rate: int, clap=None, kind: str = "frechet"
) -> QualityFn:
    """The quality of a set of clips against the α = 0 references: DSP-feature Fréchet distance, and the CLAP
    embedding FAD with a CLAP model (clips are read once)."""
    cache: dict[str, np.ndarray] = {}

    def load(result: GridResult) -> np.ndarray:
        if result.key not in cache:
            cache[result.key] = store.read_wav(result.key)[0]
        return cache[result.key]

    def quality(rows: Sequence[GridResult], refs: Sequence[GridResult]) -> dict[str, float]:
        if not rows or not refs:
            return {"kad": float("nan")} if kind == "kad" else {"dsp_frechet": float("nan")}
        steered, reference = [load(r) for r in rows], [load(r) for r in refs]
        out = _set_distance(kind, steered, reference, sample_rate)
        if clap is not None and min(len(steered), len(reference)) >= 2:  # covariances need 2 clips
            out["clap_fad"] = float(clap.embedding_fad(steered, reference, sample_rate))
        return out

    return quality


def measure(
    results: Sequence[GridResult],
    concepts: Sequence[str],
    metrics: MetricsSettings,
    store: ResultStore,
    sample_rate: int,
    *,
    clap=None,
) -> Tables:
    """The per-α table and the summary of a measured grid (CLAP scores added first, with ``clap``)."""
    attributes = {c: attribute_for(c, metrics.attributes) for c in concepts}
    if clap is not None:
        add_clap_scores(clap, results, store, sample_rate)
    quality_fn = None
    if metrics.quality != "none":
        quality_fn = quality_against_references(store, sample_rate, clap, kind=metrics.quality)
    table = per_alpha_table(results, attributes, quality_fn)
    return Tables(table, summarize(table, attributes), len(results) - len(usable(results)))


def report(paths: EvaluationPaths, results: Sequence[GridResult], tables: Tables) -> None:
    """The evaluation's files: ``metrics.csv`` (rows sorted by key), ``per_alpha.csv``, ``summary.csv``, the plot."""
    atomic_write_csv(paths.metrics_csv, [r.to_row() for r in sorted(results, key=lambda r: r.key)])
    atomic_write_csv(paths.per_alpha_csv, [r.to_row() for r in tables.per_alpha])
    atomic_write_csv(paths.summary_csv, [s.to_row() for s in tables.summary])
    plot_attribute_vs_alpha(tables.per_alpha, tables.summary, paths.plot)


class Evaluation:
    """Steer, measure and report grids of one loaded model (the CLAP model, if any, is loaded once).

    ``model``: the settings ``adapter`` was loaded with (each process of a DDP grid loads them); ``trainer``: where
    the grid runs; ``logger``: what goes to W&B (audio of ``audio_prompts_per_group`` prompts per group)."""

    def __init__(
        self,
        adapter,
        metrics: MetricsSettings,
        *,
        logger: LoggerSettings = DEFAULT_LOGGER,
        model: ModelSettings | None = None,
        trainer: TrainerSettings = ONE_PROCESS,
    ):
        self.adapter, self.metrics, self.logger = adapter, metrics, logger
        self.model, self.trainer = model, trainer
        self._clap_scorer = None
        self._measurer: ClipMeasurer | None = None

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def measurer(self) -> ClipMeasurer | None:
        """The worker pool that measures this evaluation's clips (``metrics.workers`` processes, started once and
        reused by every grid; None with ``metrics.workers=0``)."""
        if self.metrics.workers and self._measurer is None:
            warm_metrics()  # the workers load one checked numba cache instead of compiling it at once
            self._measurer = ClipMeasurer(self.metrics, workers=self.metrics.workers)
        return self._measurer

    def close(self, *, cancel: bool = False) -> None:
        """Stop the measuring workers (a later grid starts new ones)."""
        if self._measurer is not None:
            self._measurer.close(cancel=cancel)
            self._measurer = None

    def clap(self):
        """The CLAP scorer of ``metrics.clap_path`` (None without one)."""
        if self.metrics.clap_path and self._clap_scorer is None:
            self._clap_scorer = ClapScorer(self.metrics.clap_path, device=str(self.adapter.device))
        return self._clap_scorer

    def run(
        self,
        plan: GridPlan,
        directions: Directions,
        paths: EvaluationPaths,
        *,
        stage: str = FINAL_STAGE,
        wandb_run=None,
        inputs: Sequence[str] | None = None,
    ) -> list[SummaryRow]:
        """Generate ``plan``'s grid, measure, write ``paths`` and log ``stage`` to ``wandb_run``; the summary.

        ``inputs``: the artifacts this grid used, logged by earlier runs (``steerlit steer``); None: the final
        stage logs the concepts' artifacts itself (:func:`finish_run_folder`)."""
        rows = plan.rows(directions)
        results = steer(
            self.adapter,
            rows,
            directions,
            plan.steer.generation(),
            paths,
            metrics=self.metrics,
            model=self.model,
            trainer=self.trainer,
            measurer=self.measurer() if grid_devices(self.trainer) == 1 else None,
        )
        store = ResultStore(paths.folder)
        sample_rate = self.adapter.sample_rate
        tables = measure(results, plan.concepts, self.metrics, store, sample_rate, clap=self.clap())
        add_perturbation(tables.summary, results, directions)
        report(paths, results, tables)
        if tables.degenerate:
            print(
                f"degenerate rows: {tables.degenerate} of {len(results)} (non-finite or constant output), left "
                f"out of {paths.per_alpha_csv.name} and {paths.summary_csv.name}; flagged in the 'degenerate' "
                f"column of {paths.metrics_csv.name}",
                flush=True,
            )
        attributes = {c: attribute_for(c, self.metrics.attributes) for c in plan.concepts}
        if wandb_run is not None:
            log_evaluation(
                wandb_run, stage, results, (tables.per_alpha, tables.summary), paths, self.logger, attributes
            )
        if stage == FINAL_STAGE and RunLayout(paths.folder).config.exists():
            layout = RunLayout(paths.folder)
            compare_layers(layout, tables, results, directions, wandb_run)
            finish_run_folder(layout, plan.concepts, wandb_run, inputs)
        return tables.summary


def compare_layers(
    layout: RunLayout, tables: Tables, results: Sequence[GridResult], directions: Directions, wandb_run=None
) -> list[dict]:
    """The joined per-layer table and plots of the final grid (:mod:`steerlit.study.layer_comparison`), written
    into the run folder and logged to ``wandb_run`` under each concept's keys; returns the rows."""
    rows = layer_comparison_rows(layout, tables.summary, results, directions)
    if rows:
        write_layer_comparison(layout, rows)
        if wandb_run is not None:
            wandb_run.log(layer_comparison_layout(FINAL_STAGE, rows, layout))
    return rows


def finish_run_folder(
    layout: RunLayout, concepts: Sequence[str], wandb_run=None, inputs: Sequence[str] | None = None
) -> None:
    """The run's last stage: ``report.html`` (:func:`steerlit.study.report.write_report`); with a W&B run, the
    concepts' artifacts (activation index, directions, probes; unless ``inputs`` names those the grid used,
    logged by earlier runs) and the report (page and artifact, its metadata naming the inputs)."""
    write_report(layout.root)
    if wandb_run is not None:
        if inputs is None:
            inputs = log_run_artifacts(wandb_run, layout, concepts)
        log_report(wandb_run, layout.root, inputs)
