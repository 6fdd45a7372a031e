"""Head-probe maps and the probe-gated steering trade-off (issue 22), on a model and its pair probe sets.

:func:`run_head_probe_maps` records, for every twin of each probe set, the mean over ``head_steps`` decoding
steps of every attention head and every layer's ``resid_post`` (conditional half), trains the per-head logistic
probes (:mod:`steerlit.directions.head_probes`, vectorised over heads) and a layer probe of every
``resid_post`` (the gate probes), and writes the head x layer accuracy map and the head directions
(``<concept>/directions.safetensors``: what a ``top_heads`` grid steers from). It also returns each concept's
diff-mean direction (train split) at every layer, which the trade-off steers with.

:func:`run_gate_tradeoff` steers the neutral prompts towards each concept's target pole (``poles``) at ``alphas``
with a constant coefficient and with the probe gate of each ``mode`` (read at the first steered site, before its
steering), all rows in batched calls, and reports per (concept, mode, α): the attribute change (median log
ratio steered / unsteered over prompts), the quality distance to the unsteered clips
(:func:`steerlit.metrics.quality.dsp_frechet`), the gate's mean openness, and the constant curve's quality at
the same effect (linear interpolation: the comparison "at matched effect").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from steerlit.data.probe_set import ProbeSet, load_eval_prompts
from steerlit.data.splits import SPLIT_NAMES, split_examples
from steerlit.directions.head_probes import (
    accuracy_map,
    head_accuracy,
    record_head_activations,
    save_head_directions,
    save_heatmap,
    train_head_probes,
)
from steerlit.directions.probes import ProbeDataModule, train_probe
from steerlit.engines.select import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_save_figure, atomic_write_csv
from steerlit.intervene.gate import ProbeGate, load_probe_gate
from steerlit.intervene.injection import inject
from steerlit.intervene.steer import Intervention, Steering
from steerlit.metrics.attributes import clip_attribute
from steerlit.metrics.quality import dsp_frechet
from steerlit.metrics.settings import MetricsSettings
from steerlit.models.fingerprint import weights_fingerprint
from steerlit.models.sites import layer_site
from steerlit.study.layout import RunLayout
from steerlit.study.patch_settings import GateSettings, Pole, check_gate_alignment
from steerlit.study.tables import attribute_for

HEAD_METHOD = "logistic"  # the head probes are logistic probes: their direction files' method name
TRADEOFF_COLUMNS = ("concept", "mode", "alpha", "effect", "frechet", "openness", "frechet_constant_at_effect")


@dataclass
class ConceptProbes:
    """What the head-probe stage gives one concept: head accuracies, the layer-probe file and accuracies, the
    diff-mean direction at every layer ({resid_post.L: (H,)}) and the head-direction file ``top_heads`` steers
    from (``<concept>/directions.safetensors``, method :data:`HEAD_METHOD`)."""

    head_accuracy: dict[str, float]
    layer_accuracy: dict[str, float]
    probe_file: Path
    directions: dict[str, torch.Tensor]
    head_directions: Path


def _concept_probes(adapter, ps: ProbeSet, generation, settings: GateSettings, out_dir: Path, seed: int):
    """Head probes (mean over steps), gate probes of every resid_post trained on single steps (each step of each
    prompt one example: a gate reads one step) and the diff-mean directions of the step means."""
    examples = split_examples(ps.examples("pairs"), settings.split, seed)
    ordered = [ex for split in SPLIT_NAMES for ex in examples[split]]
    splits = ["train" if ex in examples["train"] else "test" for ex in ordered]  # val joins test
    labels = torch.tensor([ex.label for ex in ordered])
    layer_sites = [layer_site("resid_post", L) for L in range(adapter.num_layers)]
    texts = [ex.text for ex in ordered]
    acts = record_head_activations(
        adapter, texts, generation, steps=settings.head_steps, step_sites=layer_sites, seed=seed
    )
    module, dm = train_head_probes(
        {s: acts[s] for s in acts if s not in layer_sites}, labels, splits, settings.probe, seed=seed
    )
    accuracy = head_accuracy(module, dm)
    head_file = save_head_directions(
        RunLayout(out_dir).directions(ps.name),
        module,
        accuracy,
        model_id=adapter.model_id,
        weights_fingerprint=weights_fingerprint(adapter),
        concept=ps.name,
        method=HEAD_METHOD,
    )
    steps = settings.head_steps
    per_step = {s: acts[s].flatten(0, 1) for s in layer_sites}  # (N * steps, H)
    step_splits = [split for split in splits for _ in range(steps)]
    layer_dm = ProbeDataModule.from_tensors(per_step, labels.repeat_interleave(steps), step_splits)
    path = out_dir / f"gate_probe_{ps.name}.safetensors"
    layer_probe = train_probe(layer_dm, settings.probe, kind="logistic", seed=seed, test=False, save_to=path)
    train = torch.tensor([s == "train" for s in splits])
    means = {s: acts[s].mean(1) for s in layer_sites}
    directions = {
        s: means[s][train & (labels == 1)].mean(0) - means[s][train & (labels == 0)].mean(0)
        for s in layer_sites
    }
    return ConceptProbes(accuracy, head_accuracy(layer_probe, layer_dm), path, directions, head_file)


def run_head_probe_maps(
    adapter,
    probe_sets: Mapping[str, ProbeSet],
    generation: GenerationSettings,
    settings: GateSettings,
    out_dir: Path,
    *,
    seed: int = 0,
) -> tuple[dict[str, ConceptProbes], list[Path]]:
    """Per concept: head probes, layer (gate) probes, diff-mean directions; writes ``head_probes_<concept>``
    (layers x heads test accuracy, last column the layer probe's) as CSV + PNG and the head directions with
    their test accuracies as ``<concept>/directions.safetensors`` (the file a run folder's ``top_heads``
    strategy steers from: ``steerlit steer --run`` on this folder)."""
    heads = adapter.num_heads
    out, paths = {}, []
    for concept, ps in probe_sets.items():
        probes = _concept_probes(adapter, ps, generation, settings, out_dir, seed)
        grid = accuracy_map(probes.head_accuracy, adapter.num_layers, heads)
        layer_acc = np.array(
            [[probes.layer_accuracy[layer_site("resid_post", L)]] for L in range(adapter.num_layers)]
        )
        paths += save_heatmap(
            np.concatenate([grid, layer_acc], axis=1),
            [f"layer {L}" for L in range(adapter.num_layers)],
            [f"head {h}" for h in range(heads)] + ["resid_post"],
            out_dir / f"head_probes_{concept}",
            title=f"{concept}: probe test accuracy per attention head (last column: the layer's resid_post)",
            value_name="accuracy",
            vmin=0.5,
            vmax=1.0,
        )
        out[concept] = probes
        paths.append(probes.head_directions)
    return out, paths


@dataclass(frozen=True)
class TradeoffRow:
    """One trade-off generation: neutral prompt ``prompt`` steered for ``concept`` (None: unsteered) with
    ``mode`` (``constant`` or a gate mode) at ``alpha``."""

    prompt: int
    concept: str | None = None
    mode: str = "constant"
    alpha: float = 0.0


def pole_sign(settings: GateSettings, k: int) -> float:
    """+1 when concept ``k`` is steered towards its positive pole, -1 towards its negative one."""
    pole = settings.poles[k]
    if pole not in get_args(Pole):
        raise ValueError(f"gate.poles entries are one of {get_args(Pole)}, got {pole!r}.")
    return 1.0 if pole == "positive" else -1.0


def _gate(probes: ConceptProbes, site: str, mode: str, settings: GateSettings, sign: float) -> ProbeGate:
    gate = load_probe_gate(probes.probe_file, site, mode=mode, threshold=settings.threshold)
    # p(target pole), on readings averaged with the study's smoothing
    return ProbeGate(
        site, sign * gate.weight, sign * gate.bias, gate.mode, gate.threshold, settings.smoothing
    )


def _steering_of(adapter, row: TradeoffRow, probes: Mapping[str, ConceptProbes], concepts, settings, cache):
    """The row's steering (towards its concept's target pole) and its gate site (None: not gated)."""
    if row.concept is None:
        return [], None
    k = list(concepts).index(row.concept)
    layer, strategy, sign = settings.layers[k], settings.strategies[k], pole_sign(settings, k)
    source = layer_site("resid_post", layer)
    targets = inject(strategy, {source: probes[row.concept].directions[source]}, [layer], adapter.num_layers)
    if row.mode == "constant":
        return [Intervention(targets, sign * row.alpha)], None
    gate_site = min(targets, key=lambda s: int(s.split(".")[1]))  # the first steered site in the forward pass
    key = (row.concept, gate_site, row.mode)
    if key not in cache:
        cache[key] = _gate(probes[row.concept], gate_site, row.mode, settings, sign)
    return [Intervention(targets, sign * row.alpha, gate=cache[key])], gate_site


def generate_tradeoff_rows(
    adapter,
    rows: Sequence[TradeoffRow],
    prompts: Sequence[str],
    probes,
    concepts,
    settings: GateSettings,
    generation: GenerationSettings,
    *,
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Generate every row (batches of ``generation.batch_size``): the clips and each row's gate multipliers (N,)."""
    steps = adapter.seconds_to_steps(generation.seconds)
    hf = generation.on_hf_engine()
    size, cache = generation.batch_size or 64, {}
    clips, gates = [], []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        specs = [_steering_of(adapter, r, probes, concepts, settings, cache) for r in chunk]
        steering = Steering(adapter, [s for s, _ in specs])
        with steering:
            out = generate(
                adapter,
                [prompts[r.prompt] for r in chunk],
                hf,
                seeds=[seed + r.prompt for r in chunk],
                max_new_tokens=steps,
            )
        logs = {site: steering.gate_multipliers(site) for site in {g for _, g in specs if g is not None}}
        clips += [out.audio[i].numpy() for i in range(len(chunk))]
        gates += [None if g is None else logs[g][:steps, i] for i, (_, g) in enumerate(specs)]
        progress(f"trade-off rows {start + len(chunk)}/{len(rows)}")
    return clips, gates


def _finite_median(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def constant_distance_at(effect: float, curve: Sequence[tuple[float, float]]) -> float:
    """The quality distance of constant steering at ``effect``: along ``curve`` = [(effect, distance), ...] of
    the constant rows in ascending α, starting at α = 0 (0, 0), linearly interpolated where the curve first
    reaches ``effect`` (NaN if it never does; 0 for an effect <= 0)."""
    points = [(0.0, 0.0), *curve]
    if effect <= 0:
        return 0.0
    for (e0, d0), (e1, d1) in zip(points, points[1:]):
        if e1 >= effect:
            return float(d0 + (d1 - d0) * (effect - e0) / (e1 - e0)) if e1 != e0 else float(d1)
    return float("nan")


def _at_matched_effect(out: list[dict]) -> None:
    """Add each row's ``frechet_constant_at_effect`` (:func:`constant_distance_at` on its concept's constant rows)."""
    for r in out:
        curve = sorted(
            (c["alpha"], c["effect"], c["frechet"])
            for c in out
            if c["concept"] == r["concept"] and c["mode"] == "constant"
        )
        r["frechet_constant_at_effect"] = constant_distance_at(r["effect"], [(e, d) for _, e, d in curve])


def summarise_tradeoff(
    rows, clips, gates, sr: int, metrics: MetricsSettings, signs: Mapping[str, float]
) -> tuple[list[dict], list[dict]]:
    """Per (concept, mode, α): effect (median over prompts of ``sign x log(steered / unsteered attribute)``,
    ``signs[concept]`` = +1 towards the positive pole, -1 towards the negative one), Fréchet distance, openness
    and the constant curve's Fréchet at that effect; and the per-step openness of each gated configuration."""
    value = functools.cache(lambda i, attr: clip_attribute(clips[i], sr, attr, metrics.tempo))
    base = {r.prompt: i for i, r in enumerate(rows) if r.concept is None}
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r.concept is not None:
            groups.setdefault((r.concept, r.mode, r.alpha), []).append(i)
    out, steps = [], []
    for (concept, mode, alpha), idx in groups.items():
        attr = attribute_for(concept)
        ratio = [
            signs[concept] * (np.log(value(i, attr)) - np.log(value(base[rows[i].prompt], attr))) for i in idx
        ]
        frechet = dsp_frechet([clips[i] for i in idx], [clips[base[rows[i].prompt]] for i in idx], sr)
        multipliers = np.stack([gates[i] for i in idx]) if gates[idx[0]] is not None else None
        openness = 1.0 if multipliers is None else float(np.nanmean(multipliers))
        out.append(
            {
                "concept": concept,
                "mode": mode,
                "alpha": alpha,
                "effect": _finite_median(ratio),
                "frechet": frechet,
                "openness": openness,
            }
        )
        if multipliers is not None:
            steps += [
                {"concept": concept, "mode": mode, "alpha": alpha, "step": t, "openness": float(v)}
                for t, v in enumerate(np.nanmean(multipliers, axis=0))
            ]
    _at_matched_effect(out)
    return out, steps


def plot_tradeoff(summary: Sequence[Mapping], path: Path) -> Path:
    """Effect (x) against the quality distance (y), one panel per concept, one line per mode."""
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = list(dict.fromkeys(r["concept"] for r in summary))
    fig, axes = plt.subplots(1, len(concepts), figsize=(4.6 * len(concepts), 3.6), squeeze=False)
    for ax, concept in zip(axes[0], concepts):
        for mode in dict.fromkeys(r["mode"] for r in summary):
            pts = sorted(
                (r["alpha"], r["effect"], r["frechet"])
                for r in summary
                if r["concept"] == concept and r["mode"] == mode
            )
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=mode)
            for a, x, y in pts:
                ax.annotate(f"{a:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel(
            f"effect towards the target pole\nmedian ±log({attribute_for(concept)} steered / unsteered)"
        )
        ax.set_ylabel("DSP Fréchet distance to unsteered")
        ax.set_title(concept, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_save_figure(fig, path)
    return path


def run_gate_tradeoff(
    adapter,
    probes: Mapping[str, ConceptProbes],
    generation: GenerationSettings,
    settings: GateSettings,
    metrics: MetricsSettings,
    out_dir: Path,
    *,
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> tuple[list[dict], list[Path]]:
    """Constant vs gated steering of the neutral prompts for every concept; writes ``gate_tradeoff.csv/.png`` and
    ``gate_openness.csv`` (per step); returns the summary rows and the paths."""
    concepts = list(probes)
    check_gate_alignment(settings, concepts)
    prompts = load_eval_prompts(settings.eval_set)[: settings.n_prompts]
    rows = [TradeoffRow(j) for j in range(len(prompts))]
    rows += [
        TradeoffRow(j, c, m, a)
        for c in concepts
        for m in ("constant", *settings.modes)
        for a in settings.alphas
        for j in range(len(prompts))
    ]
    clips, gates = generate_tradeoff_rows(
        adapter, rows, prompts, probes, concepts, settings, generation, seed=seed, progress=progress
    )
    signs = {c: pole_sign(settings, k) for k, c in enumerate(concepts)}
    summary, steps = summarise_tradeoff(rows, clips, gates, adapter.sample_rate, metrics, signs)
    paths = [
        atomic_write_csv(out_dir / "gate_tradeoff.csv", summary, TRADEOFF_COLUMNS),
        atomic_write_csv(out_dir / "gate_openness.csv", steps),
        plot_tradeoff(summary, out_dir / "gate_tradeoff.png"),
    ]
    return summary, paths
