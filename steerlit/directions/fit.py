"""``fit_directions``: every direction method for every cached site, in one call.

Reads ``<run>/activations`` (see :mod:`steerlit.directions.cache`), computes

* ``diffmean`` -- mean(pos) - mean(neg) (unnormalised, as in the paper), from the streaming class sums
  written during extraction when they cover the fitting splits, else from the cached tensors;
* ``logistic`` / ``regression`` -- linear probes (:mod:`steerlit.directions.probes`), trained with
  ``Trainer.fit`` (extra ``callbacks`` welcome), weights saved in ``<run>/probes/<kind>.safetensors``;
* ``pca`` -- first PC of paired differences (twins when the cache has pairs, else random pairings);
* ``random`` -- a Gaussian direction per site (seeded by ``seed`` and the layer);

and writes ``<run>/directions.safetensors`` (tensor names ``<method>/<site>``) plus the comparison
table and plot in ``<run>/plots/``. Non-diffmean directions are scaled by ``scale``: ``diffmean``
(default: the diff-mean norm of the same site, so one coefficient means the same for every method) or
``unit``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch

from steerlit.directions import cache as C
from steerlit.directions.baselines import pca_diff, random_direction
from steerlit.directions.compare import compare_directions, log_comparison, save_comparison
from steerlit.directions.diffmean import combined, diff_mean, load_class_sums
from steerlit.directions.io import save_directions
from steerlit.directions.probes import ProbeDataModule, train_probe
from steerlit.runtime import TrainerSettings

if TYPE_CHECKING:  # settings.py imports this module's Method choices
    from steerlit.directions.settings import FitSettings

log = logging.getLogger(__name__)
Method = Literal["diffmean", "logistic", "regression", "pca", "random"]
METHODS: tuple[Method, ...] = get_args(Method)
ProbeScale = Literal["unit", "diffmean"]
DIRECTIONS_FILE = "directions.safetensors"


def _rows(meta: list[dict], splits: Sequence[str]) -> torch.Tensor:
    return torch.tensor([i for i, m in enumerate(meta) if m["split"] in splits], dtype=torch.long)


def _pairs(meta: list[dict], rows: torch.Tensor, pos_rows: torch.Tensor, neg_rows: torch.Tensor):
    """(i, j) indices into the pos/neg subsets for twins sharing a ``pair_index``; None without pairs."""
    pos_at = {int(r): k for k, r in enumerate(pos_rows)}
    neg_at = {int(r): k for k, r in enumerate(neg_rows)}
    twins: dict[int, dict[int, int]] = {}
    for r in rows.tolist():
        if meta[r].get("pair_index") is not None:
            twins.setdefault(meta[r]["pair_index"], {})[meta[r]["label"]] = r
    pairs = [(pos_at[t[1]], neg_at[t[0]]) for t in twins.values() if 0 in t and 1 in t]
    return pairs or None


def sums_fingerprint(path: Path) -> str | None:
    """Cache fingerprint stored with the class sums (None if unreadable)."""
    from safetensors import safe_open

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


def fit_directions_kw(
    run_dir: str | Path,
    methods: Sequence[str] = METHODS,
    *,
    fit_splits: Sequence[str] = ("train",),
    eval_split: str = "test",
    scale: str = "diffmean",
    seed: int = 0,
    probe_cfg: Mapping | None = None,
    accelerator: str = "cpu",
    devices: int | str = 1,
    max_epochs: int = 100,
    callbacks: Sequence = (),
    wandb_run=None,
    out: str | Path | None = None,
    **trainer_kwargs,
) -> Path:
    """Compute ``methods`` for every cached site, save ``<run>/directions.safetensors``; returns its path.

    ``fit_splits``: splits the directions are fit on (probes validate on ``val``); ``eval_split``: the
    held-out split of the comparison table (falls back to ``val``, then the fitting splits, when
    empty). ``probe_cfg``: ``kind``-independent probe options (``lr``, ``weight_decay``,
    ``standardize``, ``batch_size``). ``accelerator``/``devices``/``max_epochs``/``callbacks`` and
    ``trainer_kwargs`` go to the probe ``Trainer``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown direction method(s) {unknown}; use some of {METHODS}.")
    if scale not in ("diffmean", "unit"):
        raise ValueError(f"scale must be 'diffmean' or 'unit', got {scale!r}.")
    run_dir = Path(run_dir)
    index = C.read_index(run_dir)
    if index is None:
        raise C.CacheError(f"No activation cache in {C.activations_dir(run_dir)}: run extraction first.")
    acts, meta = C.load_activation_cache(run_dir)
    sites, y_all = list(acts), C.labels_of(meta)
    fit_rows = _rows(meta, fit_splits)
    if len(fit_rows) == 0:
        raise C.CacheError(f"No cached examples in the fitting split(s) {list(fit_splits)}.")
    y_fit = y_all[fit_rows]
    if not ((y_fit == 1).any() and (y_fit == 0).any()):
        raise C.CacheError(f"The fitting split(s) {list(fit_splits)} lack examples of one pole.")
    pos_rows, neg_rows = fit_rows[y_fit == 1], fit_rows[y_fit == 0]

    dm_vecs = diffmean_directions(run_dir, acts, meta, fit_splits)
    norms = {s: float(v.norm()) for s, v in dm_vecs.items()}

    def scaled(v: torch.Tensor, site: str) -> torch.Tensor:
        v = v / v.norm().clamp_min(1e-12)
        return v * norms[site] if scale == "diffmean" else v

    vectors: dict[tuple[str, str], torch.Tensor] = {}
    if "diffmean" in methods:
        vectors.update({("diffmean", s): v for s, v in dm_vecs.items()})
    probe_cfg = dict(probe_cfg or {})
    batch_size = probe_cfg.pop("batch_size", None)
    for kind in [m for m in methods if m in ("logistic", "regression")]:
        dm = ProbeDataModule.from_tensors(
            acts,
            y_all,
            [m["split"] for m in meta],
            batch_size=batch_size,
            seed=seed,
            train_split=list(fit_splits),
        )
        probe = train_probe(
            dm,
            kind=kind,
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            max_epochs=max_epochs,
            callbacks=callbacks,
            save_to=run_dir / "probes" / f"{kind}.safetensors",
            log_prefix=f"probe/{index.get('probe_set', run_dir.name)}/{kind}/",
            **probe_cfg,
            **trainer_kwargs,
        )
        vectors.update({(kind, s): scaled(v, s) for s, v in probe.directions("unit").items()})
    if "pca" in methods:
        pairs = _pairs(meta, fit_rows, pos_rows, neg_rows)
        for s in sites:
            vectors[("pca", s)] = scaled(pca_diff(acts[s][pos_rows], acts[s][neg_rows], pairs, seed=seed), s)
    if "random" in methods:
        for s in sites:
            vectors[("random", s)] = random_direction(
                acts[s].shape[1], norms[s] if scale == "diffmean" else 1.0, seed * 100_003 + hash_site(s)
            )

    path = save_directions(
        out or run_dir / DIRECTIONS_FILE,
        vectors,
        model_id=index.get("model_id", ""),
        concept=index.get("probe_set", ""),
        position=index.get("reduction", ""),
        n_per_class={
            index.get("positive", "1"): int((y_fit == 1).sum()),
            index.get("negative", "0"): int((y_fit == 0).sum()),
        },
        extra={
            "source": index.get("source", ""),
            "gen_steps": index.get("gen_steps", 0),
            "sites": sites,
            "fit_splits": list(fit_splits),
            "scale": scale,
            "seed": seed,
            "cache_fingerprint": index.get("fingerprint", ""),
            "probe_cfg": {**probe_cfg, "batch_size": batch_size, "max_epochs": max_epochs},
        },
    )
    write_comparison(run_dir, vectors, acts, meta, fit_splits, eval_split, wandb_run=wandb_run)
    return path


def hash_site(site: str) -> int:
    """Stable small integer for a site name (seeds the random baseline per site)."""
    import zlib

    return zlib.crc32(site.encode()) & 0xFFFF


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

    Probes train on one device (``trainer.accelerator``); ``callbacks`` and ``logger`` go to the probe ``Trainer``.
    """
    # TODO(directions helper): fold fit_directions_kw into this settings-based entry point.
    probe = settings.probe
    extra = {"logger": logger} if logger is not None else {}
    return fit_directions_kw(
        run_dir,
        list(settings.methods),
        scale=probe.scale,
        seed=seed,
        probe_cfg={
            "lr": probe.lr,
            "weight_decay": probe.weight_decay,
            "standardize": probe.standardize,
            "batch_size": probe.batch_size,
        },
        accelerator=trainer.accelerator,
        devices=1,
        max_epochs=probe.max_epochs,
        callbacks=list(callbacks),
        wandb_run=wandb_run,
        enable_progress_bar=trainer.enable_progress_bar,
        **extra,
    )
