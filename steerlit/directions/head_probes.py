"""Per-attention-head logistic probes (SMITIN) and their head x layer accuracy map.

Head activations (``attn_head.L.h`` sites, (N, head_dim) each) are recorded from short generations of the
probe prompts (:func:`record_head_activations`: mean over decoding steps, conditional half). One
:class:`~steerlit.directions.probes.LinearProbeModule` holds every head's probe at once, vectorised across heads
exactly as the layer probes are across layers (weights (L·heads, head_dim)), trained with ``Trainer.fit``
(:func:`train_head_probes`). :func:`head_accuracy` scores each head on a split; :func:`accuracy_map` lays the
scores out as (layers, heads) and :func:`save_heatmap` writes any such map as CSV and PNG (atomic writes).
:func:`save_head_directions` writes every head's probe direction ((head_dim,) each) with the accuracies, the
file a grid's ``top_heads`` strategy steers from (:func:`steerlit.engines.grid.top_head_targets`, which picks
the k most accurate heads with :func:`steerlit.intervene.injection.best_heads`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from steerlit.directions.io import save_directions
from steerlit.directions.probes import QUIET_CPU, LinearProbeModule, ProbeDataModule, ProbeScale, train_probe
from steerlit.directions.settings import ProbeTrainSettings
from steerlit.engines.grid import HEAD_ACCURACY_KEY
from steerlit.engines.select import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_save_figure, atomic_write_csv
from steerlit.intervene.record import ActivationRecorder
from steerlit.models.sites import list_head_sites, parse_site, split_site
from steerlit.runtime import TrainerSettings


def record_head_activations(
    adapter,
    prompts: Sequence[str],
    generation: GenerationSettings,
    *,
    steps: int,
    extra_sites: Sequence[str] = (),
    step_sites: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Float32 activations of each prompt's ``steps``-step generation (conditional half): every head site and
    ``extra_sites`` averaged over the steps, ``{site: (N, W)}``; ``step_sites`` (e.g. a gate probe's
    ``resid_post.L``) at every step, ``{site: (N, steps, W)}``. Batches of ``generation.batch_size``, seed
    ``seed`` for every prompt; HF engine (the recorders' hooks need it)."""
    pooled = [*list_head_sites(adapter.num_layers, adapter.num_heads), *extra_sites]
    settings = generation.on_hf_engine()
    size = generation.batch_size or 16
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in [*pooled, *step_sites]}
    for i in range(0, len(prompts), size):
        batch = list(prompts[i : i + size])
        with ExitStack() as stack:
            recorders = [stack.enter_context(ActivationRecorder(adapter, pooled, reduction="mean"))]
            if step_sites:
                recorders.append(
                    stack.enter_context(ActivationRecorder(adapter, step_sites, reduction="all"))
                )
            generate(
                adapter, batch, settings, seeds=[seed] * len(batch), max_new_tokens=steps, decode_audio=False
            )
        for rec in recorders:
            for site, acts in rec.results.items():
                chunks[site].append(acts.float())
    return {s: torch.cat(c) for s, c in chunks.items()}


def train_head_probes(
    acts: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    splits: Sequence[str],
    settings: ProbeTrainSettings,
    trainer: TrainerSettings = QUIET_CPU,
    *,
    seed: int = 0,
) -> tuple[LinearProbeModule, ProbeDataModule]:
    """Logistic probes of every head site in ``acts`` ({site: (N, head_dim)}, ``labels`` (N,) in {0, 1},
    ``splits`` N split names), all heads in one module; returns it and its data module."""
    sites = [s for s in acts if split_site(s).is_head]
    if not sites:
        raise ValueError(
            "No attn_head.L.h sites in the activations; record them with record_head_activations."
        )
    dm = ProbeDataModule.from_tensors(
        {s: acts[s] for s in sites}, labels, splits, batch_size=settings.batch_size
    )
    module = train_probe(dm, settings, trainer, kind="logistic", seed=seed, test=False)
    return module, dm


@torch.no_grad()
def head_accuracy(module: LinearProbeModule, dm: ProbeDataModule, split: str = "test") -> dict[str, float]:
    """Accuracy of each head's probe on ``split`` (``_train`` = the training split): ``{site: acc}``."""
    if not dm.has(split):
        raise ValueError(f"The probe data have no {split!r} split; use one of {sorted(dm.data)}.")
    x, y = dm.split(split)
    correct = ((module(x) > 0).long() == y[:, None]).float().mean(0)  # (sites,)
    return {s: float(correct[i]) for i, s in enumerate(module.sites)}


def accuracy_map(accuracy: Mapping[str, float], num_layers: int, num_heads: int) -> np.ndarray:
    """(layers, heads) array of per-head values (NaN for heads not in ``accuracy``)."""
    out = np.full((num_layers, num_heads), np.nan)
    for name, value in accuracy.items():
        site = parse_site(name, num_layers, num_heads)
        out[site.layer, site.head] = value
    return out


def save_head_directions(
    path: str | Path,
    module: LinearProbeModule,
    accuracy: Mapping[str, float],
    *,
    model_id: str,
    weights_fingerprint: str = "",
    concept: str = "",
    method: str = "head_probe",
    scale: ProbeScale = "diffmean",
) -> Path:
    """A direction file (atomic) of every head's probe direction (``<method>/attn_head.L.h``, (head_dim,),
    ``scale`` as in :meth:`LinearProbeModule.directions`) with ``head_accuracy`` metadata (JSON {site: accuracy});
    ``weights_fingerprint``: the model's (:func:`~steerlit.models.fingerprint.weights_fingerprint`, "" unknown)."""
    vectors = {(method, site): vec for site, vec in module.directions(scale).items()}
    extra = {HEAD_ACCURACY_KEY: {s: float(a) for s, a in accuracy.items()}}
    return save_directions(
        path,
        vectors,
        model_id=model_id,
        weights_fingerprint=weights_fingerprint,
        concept=concept,
        position="mean",
        extra=extra,
    )


def save_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path_stem: str | Path,
    *,
    title: str = "",
    cells: np.ndarray | None = None,
    value_name: str = "value",
    vmin: float | None = None,
    vmax: float | None = None,
) -> tuple[Path, Path]:
    """Write ``values`` (R, C) as ``<stem>.csv`` (one line per cell: row, column, value, then any ``cells`` text)
    and ``<stem>.png`` (matplotlib heat map with the values, or ``cells`` (R, C) strings, written in). Returns
    both paths."""
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "row": r,
            "column": c,
            value_name: float(values[i, j]),
            **({"text": cells[i, j]} if cells is not None else {}),
        }
        for i, r in enumerate(row_labels)
        for j, c in enumerate(col_labels)
    ]
    csv_path = atomic_write_csv(stem.with_suffix(".csv"), rows)
    fig, ax = plt.subplots(figsize=(1.3 + 1.15 * len(col_labels), 0.9 + 0.6 * len(row_labels)))
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for i in range(len(row_labels)):
        for j in range(len(col_labels)):
            text = cells[i, j] if cells is not None else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, ax=ax, label=value_name)
    ax.set_title(title, fontsize=9)
    png_path = stem.with_suffix(".png")
    atomic_save_figure(fig, png_path)
    return csv_path, png_path
