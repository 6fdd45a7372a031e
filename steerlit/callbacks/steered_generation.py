"""``SteeredGenerationCallback``: steer, listen, measure, log — during and after direction fitting.

At the end of every ``every_n_epochs``-th validation epoch (e.g. while a probe trains, steering with
the probe's current direction) and at the end of fitting, the callback generates the neutral
evaluation prompts over the configured grid (layers × α × method × strategy, plus α = 0
references with the same seeds) as batched rows, measures every clip, and logs

* to the run folder: ``samples/*.wav``, ``results.jsonl``, ``metrics.csv``, ``per_alpha.csv``,
  ``summary.csv``, ``plots/attribute_vs_alpha[_<stage>].png`` (nothing depends on W&B);
* to W&B: ``wandb.Audio`` clips (caption = prompt, concept, method, layer, α, strategy), a
  ``wandb.Table`` with one row per sample (settings, metrics, audio), per-α and summary tables,
  the plot, and summary scalars.
:meth:`evaluate` can also be called directly (the main job does so once all directions exist).
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np

from steerlit.directions.io import DirectionSet
from steerlit.engines.grid import STEER_COLUMNS, build_grid
from steerlit.engines.results import ResultStore, atomic_write_text
from steerlit.engines.runner import run_grid
from steerlit.study.tables import (
    attribute_for,
    format_summary,
    per_alpha_table,
    plot_attribute_vs_alpha,
    summarize,
)


@dataclass
class GridSpec:
    """What to generate: the grid axes and the sampling settings."""

    prompts: Sequence[str]
    concepts: Sequence[str]
    methods: Sequence[str]
    layers: Sequence[int]
    alphas: Sequence[float]
    strategies: Sequence[str] = ("one_to_all",)
    seeds: Sequence[int] = (0,)
    operator: str = "add"
    schedule: str | Mapping = "constant"
    half: str = "both"
    max_new_tokens: int = 100
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = 250
    batch_size: int | None = 16
    engine: str = "hf"  # hf | fast (steerlit.engines.select; falls back to hf with a logged reason)
    devices: int = 1  # > 1: rows sharded over this many processes (DDP)
    accelerator: str = "cpu"


@dataclass
class MetricSpec:
    attributes: Mapping[str, str] = field(default_factory=dict)  # concept -> attribute overrides
    tempo_kwargs: Mapping = field(default_factory=dict)
    quality: bool = True
    clap_path: str | None = None  # local CLAP folder: per-clip CLAP score to its prompt, embedding FAD per α


DirectionsSource = (
    Mapping[str, DirectionSet] | Callable[[L.LightningModule | None], Mapping[str, DirectionSet]]
)


def write_csv(path: Path, rows: Sequence[Mapping]) -> Path:
    """Dict rows as CSV, written atomically; NaN as an empty cell."""
    import io

    columns = columns_of(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())
    return path


def measure_clip(audio: np.ndarray, sr: int, tempo_kwargs: Mapping | None = None) -> dict[str, float]:
    """Every attribute of one clip (module level, so it pickles for spawned DDP workers)."""
    from steerlit.metrics.attributes import compute_attributes

    return compute_attributes(audio, sr, tempo_kwargs=dict(tempo_kwargs or {}))


def columns_of(rows: Sequence[Mapping]) -> list[str]:
    """Union of the rows' keys, in first-seen order."""
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    return columns


def records_table(rows: Sequence[Mapping]):
    """A ``wandb.Table`` of dict rows (missing cells are None)."""
    import wandb

    columns = columns_of(rows)
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


class SteeredGenerationCallback(L.Callback):
    def __init__(
        self,
        adapter,
        directions: DirectionsSource,
        grid: GridSpec,
        run_root: str | Path,
        *,
        metrics: MetricSpec | None = None,
        every_n_epochs: int = 0,
        at_fit_end: bool = True,
        wandb_run=None,
        log_audio: bool = True,
        max_audio: int = 64,
        progress: bool = True,
    ):
        self.adapter, self.directions, self.grid = adapter, directions, grid
        self.run_root = Path(run_root)
        self.metrics = metrics or MetricSpec()
        self.every_n_epochs, self.at_fit_end = every_n_epochs, at_fit_end
        self.wandb_run, self.log_audio, self.max_audio, self.progress = (
            wandb_run,
            log_audio,
            max_audio,
            progress,
        )
        self.last_summary: list[dict] = []

    # ---- Lightning hooks -------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking:
            self.evaluate(pl_module, stage=f"epoch{epoch:03d}", trainer=trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_fit_end:
            self.evaluate(pl_module, stage="final", trainer=trainer)

    # ---- the work --------------------------------------------------------------------------
    def _wandb(self, trainer):
        if self.wandb_run is not None:
            return self.wandb_run
        logger = getattr(trainer, "logger", None) if trainer is not None else None
        return getattr(logger, "experiment", None) if type(logger).__name__ == "WandbLogger" else None

    def evaluate(
        self, pl_module: L.LightningModule | None = None, stage: str = "final", trainer=None
    ) -> list[dict]:
        """Generate the grid, measure, write the run folder and log to W&B; returns the summary rows."""
        if trainer is not None and getattr(trainer, "global_rank", 0) != 0:
            return []
        directions = self.directions(pl_module) if callable(self.directions) else self.directions
        g = self.grid
        methods = [m for m in g.methods if all(m in directions[c].methods for c in g.concepts)]
        if not methods:
            raise ValueError(
                f"None of the steering methods {list(g.methods)} have directions for {list(g.concepts)}."
            )
        rows = build_grid(
            list(g.prompts),
            list(g.seeds),
            concepts=list(g.concepts),
            methods=methods,
            layers=list(g.layers),
            alphas=list(g.alphas),
            strategies=list(g.strategies),
            operator=g.operator,
            schedule=g.schedule,
            half=g.half,
        )
        out_dir = self.run_root if stage == "final" else self.run_root / "epochs" / stage
        store = ResultStore(out_dir)
        clap = self._clap()
        metrics_fn = functools.partial(measure_clip, tempo_kwargs=dict(self.metrics.tempo_kwargs))
        common = dict(
            max_new_tokens=g.max_new_tokens,
            batch_size=g.batch_size,
            guidance_scale=g.guidance_scale,
            temperature=g.temperature,
            top_k=g.top_k,
            metrics_fn=metrics_fn,
            progress=self.progress,
            engine=g.engine,
        )
        if g.devices > 1:  # rows sharded over processes (Lightning DDP); rank 0 gathers and writes
            from steerlit.engines.distributed import run_grid_distributed

            records = run_grid_distributed(
                self.adapter.model_id,
                rows,
                directions,
                out_dir=out_dir,
                devices=g.devices,
                accelerator=g.accelerator,
                **common,
            )
        else:
            records = run_grid(self.adapter, rows, directions, store=store, **common)
        attributes = {c: attribute_for(c, self.metrics.attributes) for c in g.concepts}
        if clap is not None:
            self._add_clap_scores(clap, records, store)
        quality_fn = self._quality_fn(store, clap) if self.metrics.quality else None
        table = per_alpha_table(records, attributes, quality_fn)
        summary = summarize(table, attributes)
        suffix = "" if stage == "final" else f"_{stage}"
        write_csv(out_dir / "metrics.csv", sorted(records, key=lambda r: r["key"]))
        write_csv(out_dir / "per_alpha.csv", table)
        write_csv(out_dir / "summary.csv", summary)
        plot = plot_attribute_vs_alpha(
            table, summary, self.run_root / "plots" / f"attribute_vs_alpha{suffix}.png"
        )
        run = self._wandb(trainer)
        if run is not None:
            self._log_wandb(run, stage, records, store, table, summary, plot)
        self.last_summary = summary
        return summary

    def _clap(self):
        if not self.metrics.clap_path:
            return None
        if getattr(self, "_clap_scorer", None) is None:
            from steerlit.metrics.clap import ClapScorer

            self._clap_scorer = ClapScorer(self.metrics.clap_path, device=str(self.adapter.device))
        return self._clap_scorer

    def _add_clap_scores(self, clap, records, store: ResultStore) -> None:
        audios = [store.read_wav(r["key"])[0] for r in records]
        scores = clap.clap_score(audios, self.adapter.sample_rate, [r["prompt"] for r in records])
        for rec, score in zip(records, scores):
            rec["clap_score"] = float(score)

    def _quality_fn(self, store: ResultStore, clap=None):
        from steerlit.metrics.quality import dsp_frechet

        cache: dict[str, np.ndarray] = {}

        def load(rec):
            if rec["key"] not in cache:
                cache[rec["key"]] = store.read_wav(rec["key"])[0]
            return cache[rec["key"]]

        def quality(rows, refs) -> dict[str, float]:
            if not rows or not refs:
                return {"dsp_frechet": float("nan")}
            steered, reference = [load(r) for r in rows], [load(r) for r in refs]
            out = {"dsp_frechet": float(dsp_frechet(steered, reference, self.adapter.sample_rate))}
            if clap is not None and min(len(steered), len(reference)) >= 2:  # covariances need 2 clips
                out["clap_fad"] = float(clap.embedding_fad(steered, reference, self.adapter.sample_rate))
            return out

        return quality

    def _log_wandb(self, run, stage, records, store, table, summary, plot) -> None:
        import wandb

        settings = ["prompt", "seed", *STEER_COLUMNS[:-1]]
        measures = [
            k
            for k in records[0]
            if k not in settings
            and k not in ("key", "wav", "n_terms", "prompt_index", "site_kind", "codes_sha1", "frames")
        ]
        columns = ["key", *settings, *measures, "audio"]
        samples = wandb.Table(columns=columns)
        clips = []
        for i, rec in enumerate(
            sorted(
                records,
                key=lambda r: (str(r["concept"]), str(r["method"]), str(r["layer"]), float(r["alpha"])),
            )
        ):
            audio = None
            if self.log_audio and i < self.max_audio:
                caption = (
                    f"{rec['prompt']} | {rec['concept'] or 'reference'} {rec['method'] or ''} "
                    f"L{rec['layer']} α={rec['alpha']} {rec['strategy'] or ''} seed={rec['seed']}"
                )
                audio = wandb.Audio(str(store.wav_path(rec["key"])), caption=caption)
                clips.append(audio)
            samples.add_data(*[rec.get(c) for c in columns[:-1]], audio)
        prefix = f"steer/{stage}"
        data = {
            f"{prefix}/samples": samples,
            f"{prefix}/per_alpha": records_table(table),
            f"{prefix}/summary": records_table(summary),
            f"{prefix}/attribute_vs_alpha": wandb.Image(str(plot)),
        }
        if clips:
            data[f"{prefix}/audio"] = clips
        for s in summary:
            name = f"{prefix}/{s['concept']}/{s['method']}/L{s['layer']}/{s['strategy']}"
            for k in ("slope_per_alpha", "spearman", "rel_change_max", "rel_change_min", "quality_cost"):
                if not math.isnan(s[k]):
                    data[f"{name}/{k}"] = s[k]
        run.log(data)


def print_summary(summary: Sequence[Mapping]) -> None:
    print(format_summary(summary), flush=True)
