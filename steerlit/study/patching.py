"""Activation-patching maps: which layers and decoding steps carry a concept (issue 22).

For the first ``n_pairs`` twins of each probe set (positive twin = source, negative twin = target, one seed per
pair), :func:`run_pair_runs` generates sources and targets in one batch while recording the patch sites
(each of ``site_kinds`` at every layer, all steps, both CFG halves). ``xattn_out`` (the default) is where each
layer reads the text: patching it at every layer over every step reproduces the source exactly, so its map
splits the prompt's effect over layers and steps; ``resid_post.L`` carries everything upstream of layer L.
:func:`run_patch_rows` then generates every (pair, site, step window) row with the target prompt and the source's activations patched in
(:class:`~steerlit.intervene.patching.Patching`), in batches of ``generation.batch_size`` rows, and measures

* the audio attribute of the concept (``bpm`` for tempo, ``centroid_hz`` for timbre), in log space;
* a cheaper readout: the mean over steps of the last layer's ``resid_post`` projected on the pairs' own
  source − target difference (a diff-mean probe score).

Each is normalised per pair, ``(patched − target) / (source − target)`` (0 = target unchanged, 1 = the source's
value transferred); pairs whose source and target differ by less than ``min_gap`` are left out. A cell of the
map is the ``statistic`` (median or mean) over pairs with a percentile bootstrap CI (:func:`summarise`).
:func:`run_patching` runs it all, with the head-probe map and the gated-steering trade-off
(:mod:`steerlit.study.gating`), and writes CSV + PNG files under its output folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerlit.data.probe_set import ProbeSet, load_probe_set
from steerlit.directions.head_probes import save_heatmap
from steerlit.engines.select import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_write_csv, atomic_write_json
from steerlit.intervene.patching import (
    Patching,
    PatchRow,
    StepWindow,
    normalised_effect,
    patch_grid,
    record_sources,
)
from steerlit.intervene.record import ActivationRecorder
from steerlit.metrics.attributes import clip_attribute
from steerlit.metrics.settings import MetricsSettings
from steerlit.models.sites import layer_site, split_site
from steerlit.study.gating import run_gate_tradeoff, run_head_probe_maps
from steerlit.study.patch_settings import PatchSettings, check_gate_alignment
from steerlit.study.tables import attribute_for

MAP_COLUMNS = (
    "concept",
    "measure",
    "site_kind",
    "layer",
    "site",
    "window",
    "effect",
    "ci_low",
    "ci_high",
    "n_pairs",
)


@dataclass
class PairRuns:
    """Sources and targets of every concept, generated in one batch: ``prompts`` = all sources, then all
    targets; ``concepts[i]``/``pair[i]`` name each source row; ``sources`` the recorded sites {site: (S', N, W)};
    ``attributes`` and ``readouts`` per prompt row."""

    prompts: list[str]
    seeds: list[int]
    concepts: list[str]
    pair: list[int]
    sources: dict[str, torch.Tensor]
    attributes: np.ndarray
    readouts: np.ndarray

    @property
    def n_sources(self) -> int:
        return len(self.concepts)


def readout_site(adapter) -> str:
    return layer_site("resid_post", adapter.num_layers - 1)


def run_pair_runs(
    adapter,
    probe_sets: Mapping[str, ProbeSet],
    settings: PatchSettings,
    generation: GenerationSettings,
    metrics: MetricsSettings,
) -> PairRuns:
    """Generate every concept's sources and targets (one seed per pair) and record the patch sites."""
    concepts, pair, sources, targets, seeds = [], [], [], [], []
    for concept, ps in probe_sets.items():
        if len(ps.pairs) < settings.n_pairs:
            raise ValueError(f"{ps.where} has {len(ps.pairs)} pairs, fewer than n_pairs={settings.n_pairs}.")
        for i, (src, tgt) in enumerate(ps.pairs[: settings.n_pairs]):
            concepts.append(concept), pair.append(i), sources.append(src), targets.append(tgt)
            seeds.append(settings.seed + i)
    prompts, all_seeds = sources + targets, seeds + seeds
    sites = sorted({*patch_sites(adapter, settings), readout_site(adapter)})
    steps = adapter.seconds_to_steps(generation.seconds)
    out = {}
    recorded = record_sources(
        adapter,
        sites,
        lambda: out.setdefault(
            "gen",
            generate(adapter, prompts, generation.on_hf_engine(), seeds=all_seeds, max_new_tokens=steps),
        ),
    )
    concept_of = concepts + concepts
    attrs = np.array(
        [
            clip_attribute(
                out["gen"].audio[i].numpy(), adapter.sample_rate, attribute_for(concept_of[i]), metrics.tempo
            )
            for i in range(len(prompts))
        ]
    )
    readouts = recorded[readout_site(adapter)][: len(prompts)].float().mean(1).numpy()  # cond rows, (2S, H)
    return PairRuns(prompts, all_seeds, concepts, pair, recorded, attrs, readouts)


def patch_sites(adapter, settings: PatchSettings) -> list[str]:
    """``site_kinds`` x ``layers`` (None: every layer), kind-major."""
    layers = range(adapter.num_layers) if settings.layers is None else settings.layers
    return [layer_site(kind, L) for kind in settings.site_kinds for L in layers]


def run_patch_rows(
    adapter,
    runs: PairRuns,
    cells: Sequence[PatchRow],
    settings: PatchSettings,
    generation: GenerationSettings,
    metrics: MetricsSettings,
    *,
    progress: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate every cell's target with the source patched in, in batches: (attributes (C,), readouts (C, H)).
    ``cells``: one :class:`PatchRow` per (source row of ``runs``, site, window), one site each."""
    n, steps = runs.n_sources, adapter.seconds_to_steps(generation.seconds)
    size = generation.batch_size or 64
    attrs, readouts = [], []
    for start in range(0, len(cells), size):
        chunk = cells[start : start + size]
        prompts = [runs.prompts[n + c.source] for c in chunk]
        seeds = [runs.seeds[n + c.source] for c in chunk]
        with ExitStack() as stack:
            stack.enter_context(Patching(adapter, runs.sources, chunk, half=settings.half))
            rec = stack.enter_context(ActivationRecorder(adapter, [readout_site(adapter)], reduction="mean"))
            out = generate(adapter, prompts, generation.on_hf_engine(), seeds=seeds, max_new_tokens=steps)
        for i, c in enumerate(chunk):
            attribute = attribute_for(runs.concepts[c.source])
            attrs.append(clip_attribute(out.audio[i].numpy(), adapter.sample_rate, attribute, metrics.tempo))
        readouts.append(rec.results[readout_site(adapter)].numpy())
        progress(f"patched rows {start + len(chunk)}/{len(cells)}")
    return np.array(attrs), np.concatenate(readouts)


def bootstrap_ci(
    values: np.ndarray, statistic: str, ci: float, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """(statistic, low, high) of ``values`` (NaN dropped): percentile bootstrap over the values."""
    stat = {"median": np.median, "mean": np.mean}.get(statistic)
    if stat is None:
        raise ValueError(f"Unknown statistic {statistic!r}; use 'median' or 'mean'.")
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = stat(values[rng.integers(0, values.size, size=(n_boot, values.size))], axis=1)
    tail = (1.0 - ci) / 2 * 100
    return float(stat(values)), float(np.percentile(boots, tail)), float(np.percentile(boots, 100 - tail))


def cell_effects(
    runs: PairRuns, cells: Sequence[PatchRow], attrs: np.ndarray, readouts: np.ndarray, min_gap: float
) -> dict[str, np.ndarray]:
    """Per-cell normalised effects: ``attribute`` (log space; NaN where the pair's gap < ``min_gap``) and
    ``readout`` (projection on the concept's mean source − target readout difference)."""
    n = runs.n_sources
    index = np.array([c.source for c in cells])
    log_src, log_tgt = np.log(runs.attributes[:n][index]), np.log(runs.attributes[n:][index])
    attribute = normalised_effect(np.log(attrs), log_src, log_tgt)
    attribute[np.abs(log_src - log_tgt) < min_gap] = np.nan
    concepts = np.array(runs.concepts)
    direction = {
        c: runs.readouts[:n][concepts == c].mean(0) - runs.readouts[n:][concepts == c].mean(0)
        for c in set(concepts)
    }
    d = np.stack([direction[runs.concepts[i]] for i in index])  # (C, H)
    score = lambda x: (x * d).sum(-1)  # noqa: E731
    readout = normalised_effect(
        score(readouts), score(runs.readouts[:n][index]), score(runs.readouts[n:][index])
    )
    return {"attribute": attribute, "readout": readout}


def summarise(
    runs: PairRuns, cells: Sequence[PatchRow], effects: Mapping[str, np.ndarray], settings: PatchSettings
) -> list[dict]:
    """One row per (concept, measure, site, window): the statistic over pairs and its bootstrap CI."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cells):
        groups.setdefault((runs.concepts[c.source], *c.sites, c.window), []).append(i)  # one site per cell
    rows = []
    for measure, values in effects.items():
        for (concept, site, window), idx in groups.items():
            effect, low, high = bootstrap_ci(
                values[idx], settings.statistic, settings.ci, settings.n_boot, settings.seed
            )
            rows.append(
                {
                    "concept": concept,
                    "measure": measure,
                    "site_kind": split_site(site).kind,
                    "layer": split_site(site).layer,
                    "site": site,
                    "window": window.name,
                    "effect": effect,
                    "ci_low": low,
                    "ci_high": high,
                    "n_pairs": int(np.isfinite(values[idx]).sum()),
                }
            )
    return rows


def save_patch_maps(rows: Sequence[Mapping], out_dir: Path, settings: PatchSettings) -> list[Path]:
    """``patching_<concept>_<site kind>_<measure>.csv/.png`` heat maps (layers x windows, cells "effect [low,
    high]") and the long table ``patching_map.csv``."""
    paths = [atomic_write_csv(out_dir / "patching_map.csv", rows, MAP_COLUMNS)]
    groups = dict.fromkeys((r["concept"], r["site_kind"], r["measure"]) for r in rows)
    for concept, kind, measure in groups:
        sel = [r for r in rows if (r["concept"], r["site_kind"], r["measure"]) == (concept, kind, measure)]
        layers = sorted({r["layer"] for r in sel})
        windows = list(dict.fromkeys(r["window"] for r in sel))
        by = {(r["layer"], r["window"]): r for r in sel}
        values = np.array([[by[(L, w)]["effect"] for w in windows] for L in layers])
        cells = np.array(
            [
                [
                    f"{by[(L, w)]['effect']:.2f}\n[{by[(L, w)]['ci_low']:.2f}, {by[(L, w)]['ci_high']:.2f}]"
                    for w in windows
                ]
                for L in layers
            ]
        )
        title = (
            f"{concept}: patching {kind}, normalised {measure} effect\n"
            f"{settings.statistic} over {sel[0]['n_pairs']} pairs, {settings.ci:.0%} bootstrap CI"
        )
        paths += save_heatmap(
            values,
            [f"{kind}.{L}" for L in layers],
            [f"steps {w}" for w in windows],
            out_dir / f"patching_{concept}_{kind}_{measure}",
            title=title,
            cells=cells,
            value_name="normalised effect",
            vmin=-0.25,
            vmax=1.25,
        )
    return paths


def pair_table(runs: PairRuns) -> list[dict]:
    """One row per pair: concept, index, the two prompts and their attributes."""
    n = runs.n_sources
    return [
        {
            "concept": c,
            "pair": p,
            "source": runs.prompts[i],
            "target": runs.prompts[n + i],
            "source_attribute": runs.attributes[i],
            "target_attribute": runs.attributes[n + i],
        }
        for i, (c, p) in enumerate(zip(runs.concepts, runs.pair))
    ]


def run_patching(
    adapter,
    out_dir: str | Path,
    settings: PatchSettings,
    generation: GenerationSettings,
    metrics: MetricsSettings,
    *,
    probe_sets: Mapping[str, ProbeSet] | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    """Patching maps of every concept (attribute and readout), head-probe maps and the gated trade-off, written
    under ``out_dir`` (``probe_sets``: ``settings.concepts`` loaded by name, default loaded here); returns
    ``{"maps", "heads", "tradeoff", "pairs", "seconds", "files"}`` (also in ``summary.json``)."""
    windows = [StepWindow.parse(w) for w in settings.windows]
    if probe_sets is None:
        probe_sets = {ps.name: ps for ps in (load_probe_set(c) for c in settings.concepts)}
    check_gate_alignment(settings.gate, list(probe_sets))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock, seconds = time.perf_counter(), {}
    runs = run_pair_runs(adapter, probe_sets, settings, generation, metrics)
    cells = patch_grid(runs.n_sources, [(site,) for site in patch_sites(adapter, settings)], windows)
    attrs, readouts = run_patch_rows(adapter, runs, cells, settings, generation, metrics, progress=progress)
    maps = summarise(runs, cells, cell_effects(runs, cells, attrs, readouts, settings.min_gap), settings)
    files = save_patch_maps(maps, out_dir, settings)
    seconds["patching"] = time.perf_counter() - clock
    probes, head_files = run_head_probe_maps(
        adapter, probe_sets, generation, settings.gate, out_dir, seed=settings.seed
    )
    seconds["head_probes"] = time.perf_counter() - clock - seconds["patching"]
    tradeoff, gate_files = run_gate_tradeoff(
        adapter, probes, generation, settings.gate, metrics, out_dir, seed=settings.seed, progress=progress
    )
    seconds["tradeoff"] = time.perf_counter() - clock - seconds["patching"] - seconds["head_probes"]
    pairs = pair_table(runs)
    files += [atomic_write_csv(out_dir / "patching_pairs.csv", pairs), *head_files, *gate_files]
    heads = {c: {"heads": p.head_accuracy, "layers": p.layer_accuracy} for c, p in probes.items()}
    summary = dict(maps=maps, heads=heads, tradeoff=tradeoff, pairs=pairs, seconds=seconds)
    summary["files"] = [str(f) for f in files]
    atomic_write_json(out_dir / "summary.json", _json_safe(summary))
    return summary


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def log_patching(summary: Mapping, wandb_run, key: str = "patching") -> None:
    """Log every PNG (``wandb.Image``) and the map and trade-off tables (``wandb.Table``) of a
    :func:`run_patching` summary to ``wandb_run``; no-op if None."""
    if wandb_run is None:
        return
    import wandb  # deferred: wandb

    payload = {f"{key}/{Path(f).stem}": wandb.Image(f) for f in summary["files"] if str(f).endswith(".png")}
    payload[f"{key}/map_table"] = wandb.Table(
        columns=list(MAP_COLUMNS), data=[[r[c] for c in MAP_COLUMNS] for r in summary["maps"]]
    )
    if summary["tradeoff"]:
        columns = list(summary["tradeoff"][0])
        payload[f"{key}/gate_tradeoff_table"] = wandb.Table(
            columns=columns, data=[[r[c] for c in columns] for r in summary["tradeoff"]]
        )
    wandb_run.log(payload)
