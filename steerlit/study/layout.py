"""The run folder: every path a run writes, readable without W&B. This docstring is its one description.

``<output_dir>/<run_name>/`` (default name ``<experiment or 'run'>-<YYYYmmdd-HHMMSS>``, or ``-job<id>`` under
torchrun / SLURM)::

    .lock                                held by the run using the folder (steerlit.study.launch.RunLock)

    config.yaml                          the resolved settings (`steerlit fit|steer --run` read them back)
    <concept>/activations/               activation cache: <split>/shard-NNNNN.safetensors, index.json,
                                         class_sums.safetensors (written by steerlit.directions.extraction)
    <concept>/directions.safetensors     every fitted method's direction per site (tensor names <method>/<site>)
    <concept>/probes/<kind>.safetensors  trained probe weights (logistic, regression)
    <concept>/plots/                     direction_comparison.{csv,png}; attribute_vs_alpha_<stage>.png of the
                                         grids steered while the concept's probes train
    <concept>/epochs/<stage>/            those grids' evaluation files (as below), stage = epochNNN
    samples/<key>.wav                    one clip per grid row (steerlit.engines.results.ResultStore)
    results.jsonl, settings.json         finished grid rows (resume) and the grid's generation settings
    metrics.csv                          one row per clip: settings, codes_sha1, measurements, wav
    per_alpha.csv, summary.csv           per (concept, method, layer, strategy) group: per α, and steerability
    plots/attribute_vs_alpha.png         median target attribute vs α
    layer_comparison.csv                 per steered group: held-out AUROC / Cohen's d (CIs), cosine with
                                         diff-mean, steering slope (CI), quality cost
    plots/layer_comparison_<concept>.png those columns vs layer (both: steerlit.study.layer_comparison)
    report.html, report_assets/          the listening report and its thumbnails; samples/index.csv names the
                                         clips (steerlit.study.report)
    source.json                          a re-steered folder's source run and directions hashes
                                         (steerlit.study.resteer)
    wandb/                               every W&B file (offline: `wandb sync <run>/wandb/wandb/offline-run-*`)
    wandb/run_id                         the folder's one W&B run id, resumed by every invocation
                                         (steerlit.study.tracking.folder_run_id)

:class:`RunLayout` owns these paths; :class:`EvaluationPaths` are the files of one evaluation (the final grid
in the run folder itself, or one probe-training stage under ``<concept>/epochs/<stage>/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerlit.study.launch import resolve_run_root

FINAL_STAGE = "final"
SAMPLES_DIR = "samples"  # what steerlit.engines.results.ResultStore writes under a grid folder
RESULTS_FILE = "results.jsonl"
DIRECTIONS_FILE = "directions.safetensors"


def child(name: str, base: str = "folder") -> property:
    """A read-only path attribute: ``<self.{base}>/{name}``."""
    return property(lambda paths: getattr(paths, base) / name, doc=f"``<{base}>/{name}``")


class GridFiles:
    """The files of one grid under ``self.folder``: its clips (ResultStore: samples/, results.jsonl) and tables."""

    folder: Path

    samples = child(SAMPLES_DIR)
    results = child(RESULTS_FILE)
    metrics_csv = child("metrics.csv")
    per_alpha_csv = child("per_alpha.csv")
    summary_csv = child("summary.csv")

    @property
    def tables(self) -> tuple[Path, Path, Path]:
        """The finished grid's tables: ``summary.csv``, ``per_alpha.csv``, ``metrics.csv``."""
        return self.summary_csv, self.per_alpha_csv, self.metrics_csv

    def wav(self, key: str) -> Path:
        """A grid row's clip."""
        return self.samples / f"{key}.wav"


@dataclass(frozen=True)
class EvaluationPaths(GridFiles):
    """Where one evaluation writes: the grid ``folder`` with its tables, and its plot."""

    folder: Path
    plot: Path


@dataclass(frozen=True)
class RunLayout(GridFiles):
    """The paths of one run folder (see the module docstring). Only :meth:`create` makes folders; writers
    create the parents they need."""

    root: Path

    @classmethod
    def create(cls, output_dir: str | Path, run_name: str | None, experiment: str | None = None) -> RunLayout:
        """A new (or resumed, when ``run_name`` exists) run folder under ``output_dir``; every rank of a
        multi-process run gets the same one (:func:`steerlit.study.launch.resolve_run_root`)."""
        root = resolve_run_root(output_dir, run_name, experiment)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    # ---- per concept -------------------------------------------------------------------------
    def concept(self, concept: str) -> Path:
        """The concept folder: what extraction and fitting take as their ``run_dir``."""
        return self.root / concept

    def activations(self, concept: str) -> Path:
        return self.concept(concept) / "activations"

    def directions(self, concept: str) -> Path:
        return self.concept(concept) / DIRECTIONS_FILE

    def probes(self, concept: str) -> Path:
        return self.concept(concept) / "probes"

    def concept_plots(self, concept: str) -> Path:
        return self.concept(concept) / "plots"

    # ---- the steering grid (GridFiles under the root: samples, results, metrics/per_alpha/summary CSVs) -----
    @property
    def folder(self) -> Path:
        return self.root

    plots = child("plots", base="root")
    layer_comparison_csv = child("layer_comparison.csv", base="root")

    def layer_comparison_plot(self, concept: str) -> Path:
        return self.plots / f"layer_comparison_{concept}.png"

    def epochs(self, stage: str, concept: str | None = None) -> Path:
        """A probe-training stage's grid folder (``[<concept>/]epochs/<stage>``)."""
        base = self.concept(concept) if concept else self.root
        return base / "epochs" / stage

    def evaluation(self, stage: str = FINAL_STAGE, concept: str | None = None) -> EvaluationPaths:
        """The files of one evaluation: the final grid in the run folder, a stage's under its epochs folder;
        the plot ``attribute_vs_alpha[_<stage>].png`` in the (concept's) plots folder."""
        base = self.concept(concept) if concept else self.root
        if stage == FINAL_STAGE:
            return EvaluationPaths(base, base / "plots" / "attribute_vs_alpha.png")
        return EvaluationPaths(
            self.epochs(stage, concept), base / "plots" / f"attribute_vs_alpha_{stage}.png"
        )

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"
