"""``fit_directions``: every direction method for every cached site, in one call.

Reads ``<run>/activations`` (see :mod:`steerlit.directions.cache`), computes

* ``diffmean`` -- mean(pos) - mean(neg) (unnormalised, as in the paper), from the streaming class sums
  written during extraction when they cover the fitting splits, else from the cached tensors;
* ``logistic`` / ``regression`` -- linear probes (:mod:`steerlit.directions.probes`), trained with
  ``Trainer.fit`` (extra ``callbacks`` welcome), weights saved in ``<run>/probes/<kind>.safetensors``;
* ``pca`` -- first PC of paired differences (twins when the cache has pairs, else random pairings);
* ``random`` -- a Gaussian direction per site (seeded by ``seed`` and the layer);

and writes ``<run>/directions.safetensors`` (tensor names ``<method>/<site>``; metadata
``activation_norms``: the mean ‖h‖ per site over the fitting rows, :func:`activation_norms`, the scale α·‖v‖ is
compared with) plus the comparison table and plot in ``<run>/plots/``. Non-diffmean directions are scaled by
``fit.probe.scale``: ``diffmean`` (default: the diff-mean norm of the same site, so one coefficient means the same
for every method) or ``unit``.

Each method is one entry of the registry :data:`METHOD_FITTERS`, keyed by the :data:`Method` choices, with
its function in :mod:`steerlit.directions.methods`. To add a method: write its function there, add its name
to ``Method`` and one entry here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch
from safetensors import safe_open

from steerlit.directions import cache as C
from steerlit.directions.compare import compare_directions, log_comparison, save_comparison
from steerlit.directions.diffmean import combined, diff_mean, load_class_sums
from steerlit.directions.io import save_directions
from steerlit.directions.methods import (
    MethodInputs,
    diffmean_method,
    logistic_method,
    pca_method,
    random_method,
    regression_method,
)
from steerlit.directions.probes import SCALES
from steerlit.directions.probes import ProbeScale as ProbeScale  # re-exported with the other fit choices
from steerlit.runtime import TrainerSettings

if TYPE_CHECKING:  # settings.py imports this module's Method choices
    from steerlit.directions.settings import FitSettings

log = logging.getLogger(__name__)
Method = Literal["diffmean", "logistic", "regression", "pca", "random"]
METHODS: tuple[Method, ...] = get_args(Method)
MethodFitter = Callable[[MethodInputs], dict[str, torch.Tensor]]
# The direction-method registry: how each method is fitted ({site: (H,)}), in the order directions are written.
METHOD_FITTERS: dict[Method, MethodFitter] = {
    "diffmean": diffmean_method,
    "logistic": logistic_method,
    "regression": regression_method,
    "pca": pca_method,
    "random": random_method,
}
DIRECTIONS_FILE = "directions.safetensors"
FIT_SPLITS = ("train",)  # the splits directions are fitted on (probes validate on "val")
EVAL_SPLIT = "test"  # the held-out split of the comparison table


def _rows(meta: list[dict], splits: Sequence[str]) -> torch.Tensor:
    return torch.tensor([i for i, m in enumerate(meta) if m["split"] in splits], dtype=torch.long)


def sums_fingerprint(path: Path) -> str | None:
    """Cache fingerprint stored with the class sums (None if unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except Exception:
        return None


def diffmean_directions(
    run_dir: str | Path, acts, meta, fit_splits: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Diff-mean per site from the streaming sums if they match the cache, else from ``acts``."""
    rows = _rows(meta, fit_splits)
    y = C.labels_of(meta)[rows]
    sums_path = C.activations_dir(run_dir) / C.SUMS_FILE
    if sums_path.exists():
        by_split = load_class_sums(sums_path)
        index = C.read_index(run_dir) or {}
        if sums_fingerprint(sums_path) == index.get("fingerprint") and all(s in by_split for s in fit_splits):
            cs = combined(by_split, fit_splits)
            counts = next(iter(cs.counts.values()))
            if (
                int(counts[1]) == int((y == 1).sum())
                and int(counts[0]) == int((y == 0).sum())
                and set(acts) <= set(cs.sums)
            ):
                return {s: d for s, d in cs.directions().items() if s in acts}
        log.warning(
            "Class sums in %s do not match the cache; computing diff-mean from the tensors.", sums_path
        )
    return {s: diff_mean(a[rows][y == 1], a[rows][y == 0]) for s, a in acts.items()}


def activation_norms(acts: Mapping[str, torch.Tensor], rows: torch.Tensor) -> dict[str, float]:
    """``{site: mean L2 norm of the cached activations (N, H) of rows (R,)}``: the typical ‖h‖ a direction
    is added to (the cache holds one reduced activation per prompt, e.g. the first decoder position)."""
    return {s: round(float(a[rows].double().norm(dim=1).mean()), 6) for s, a in acts.items()}


def check_fit_settings(settings: FitSettings) -> None:
    """One clear error for an unknown method or probe scale."""
    unknown = [m for m in settings.methods if m not in METHOD_FITTERS]
    if unknown:
        raise ValueError(f"Unknown direction method(s) {unknown}; use some of {METHODS}.")
    if settings.probe.scale not in SCALES:
        raise ValueError(f"fit.probe.scale must be one of {SCALES}, got {settings.probe.scale!r}.")


def method_inputs(
    run_dir: Path, settings: FitSettings, trainer: TrainerSettings, *, seed: int, callbacks: Sequence, logger
) -> MethodInputs:
    """Read the cache of ``run_dir`` and gather what every method needs (fitting rows, diff-mean vectors)."""
    index = C.require_index(run_dir)
    acts, meta = C.load_activation_cache(run_dir)
    labels = C.labels_of(meta)
    fit_rows = _rows(meta, FIT_SPLITS)
    if len(fit_rows) == 0:
        raise C.CacheError(f"No cached examples in the fitting split(s) {list(FIT_SPLITS)}.")
    y_fit = labels[fit_rows]
    if not ((y_fit == 1).any() and (y_fit == 0).any()):
        raise C.CacheError(f"The fitting split(s) {list(FIT_SPLITS)} lack examples of one pole.")
    return MethodInputs(
        run_dir=run_dir,
        acts=acts,
        labels=labels,
        meta=meta,
        fit_splits=FIT_SPLITS,
        fit_rows=fit_rows,
        pos_rows=fit_rows[y_fit == 1],
        neg_rows=fit_rows[y_fit == 0],
        diffmean=diffmean_directions(run_dir, acts, meta, FIT_SPLITS),
        settings=settings,
        trainer=trainer,
        seed=seed,
        callbacks=tuple(callbacks),
        logger=logger,
        probe_set=index.get("probe_set", run_dir.name),
    )


def save_fitted(
    path: Path, vectors: Mapping[tuple[str, str], torch.Tensor], inputs: MethodInputs, index: dict
) -> Path:
    """Write ``vectors`` with the cache's and the fit's description in the file's metadata."""
    probe = inputs.settings.probe
    y_fit = inputs.labels[inputs.fit_rows]
    return save_directions(
        path,
        vectors,
        model_id=index.get("model_id", ""),
        weights_fingerprint=index.get("weights_fingerprint", ""),
        concept=index.get("probe_set", ""),
        position=index.get("reduction", ""),
        n_per_class={
            index.get("positive", "1"): int((y_fit == 1).sum()),
            index.get("negative", "0"): int((y_fit == 0).sum()),
        },
        extra={
            "source": index.get("source", ""),
            "gen_steps": index.get("gen_steps", 0),
            "sites": inputs.sites,
            "fit_splits": list(inputs.fit_splits),
            "scale": probe.scale,
            "seed": inputs.seed,
            "cache_fingerprint": index.get("fingerprint", ""),
            "activation_norms": activation_norms(inputs.acts, inputs.fit_rows),
            "probe_cfg": {
                "lr": probe.lr,
                "weight_decay": probe.weight_decay,
                "standardize": probe.standardize,
                "batch_size": probe.batch_size,
                "max_epochs": probe.max_epochs,
            },
        },
    )


def fit_directions(
    run_dir: str | Path,
    settings: FitSettings,
    trainer: TrainerSettings,
    *,
    seed: int = 0,
    callbacks: Sequence = (),
    wandb_run=None,
    logger=None,
) -> Path:
    """Fit every method of ``settings`` on a concept's cache; save ``<run>/directions.safetensors``; return its path.

    Directions are fitted on the ``train`` split (probes validate on ``val``); the comparison table in
    ``<run>/plots/`` is measured on ``test`` (``val``, then ``train``, when that lacks a pole) and logged to
    ``wandb_run`` when given. Probes train on one device (``trainer.accelerator``); ``callbacks`` and ``logger``
    go to the probe ``Trainer``.
    """
    check_fit_settings(settings)
    run_dir = Path(run_dir)
    inputs = method_inputs(run_dir, settings, trainer, seed=seed, callbacks=callbacks, logger=logger)
    vectors: dict[tuple[str, str], torch.Tensor] = {}
    for method, fit in METHOD_FITTERS.items():
        if method in settings.methods:
            vectors.update({(method, site): v for site, v in fit(inputs).items()})
    path = save_fitted(run_dir / DIRECTIONS_FILE, vectors, inputs, C.read_index(run_dir) or {})
    write_comparison(
        run_dir, vectors, inputs.acts, inputs.meta, inputs.fit_splits, EVAL_SPLIT, wandb_run=wandb_run
    )
    return path


def write_comparison(
    run_dir: str | Path,
    vectors: Mapping[tuple[str, str], torch.Tensor],
    acts: Mapping[str, torch.Tensor],
    meta: list[dict],
    fit_splits: Sequence[str] = ("train",),
    eval_split: str = "test",
    wandb_run=None,
) -> list[dict]:
    """Comparison table (CSV + PNG in ``<run>/plots/``) of ``vectors``; logged to ``wandb_run`` if given."""
    y_all = C.labels_of(meta)
    fit_rows = _rows(meta, fit_splits)
    for split in (eval_split, "val"):
        eval_rows = _rows(meta, [split])
        if len(eval_rows) and len(set(y_all[eval_rows].tolist())) == 2:
            break
    else:
        log.warning("No held-out split with both poles: the comparison uses the fitting split(s).")
        eval_rows = fit_rows
    train = ({s: a[fit_rows] for s, a in acts.items()}, y_all[fit_rows])
    test = ({s: a[eval_rows] for s, a in acts.items()}, y_all[eval_rows])
    reference = {s: v for (m, s), v in vectors.items() if m == "diffmean"} or diffmean_directions(
        run_dir, acts, meta, fit_splits
    )
    rows = compare_directions(vectors, train, test, reference=reference)
    index = C.read_index(run_dir) or {}
    _, png = save_comparison(
        rows, Path(run_dir) / "plots", title=f"{index.get('probe_set', '')} ({index.get('model_id', '')})"
    )
    log_comparison(rows, png, wandb_run)
    return rows
