"""How each direction method is fitted: one function per method, all with the same inputs.

A method function takes :class:`MethodInputs` (the cached activations of every site, their labels and fitting
rows, the diff-mean vectors) and returns ``{site: (H,)}``. The registry that names them is
:data:`steerlit.directions.fit.METHOD_FITTERS`; adding a method is a function here, its name in
:data:`~steerlit.directions.fit.Method` and one registry entry.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerlit.directions.baselines import pca_diff, random_direction
from steerlit.directions.probes import ProbeDataModule, ProbeKind, train_probe
from steerlit.runtime import TrainerSettings

if TYPE_CHECKING:  # settings.py imports fit.py, which imports this module
    from steerlit.directions.settings import FitSettings


@dataclass(frozen=True)
class MethodInputs:
    """What every direction method gets.

    ``acts`` {site: (N, H)} and ``labels`` (N,) (1 = positive pole) of the whole cache, ``meta`` its N example
    dicts; ``fit_rows`` (F,) the rows of the fitting splits, ``pos_rows``/``neg_rows`` those of each pole;
    ``diffmean`` {site: (H,)} mean(pos) - mean(neg) on the fitting rows. ``settings``/``trainer``/``callbacks``/
    ``logger`` are for methods that train (probes); ``seed`` for those that draw.
    """

    run_dir: Path
    acts: Mapping[str, torch.Tensor]
    labels: torch.Tensor
    meta: list[dict]
    fit_splits: tuple[str, ...]
    fit_rows: torch.Tensor
    pos_rows: torch.Tensor
    neg_rows: torch.Tensor
    diffmean: Mapping[str, torch.Tensor]
    settings: FitSettings
    trainer: TrainerSettings
    seed: int = 0
    callbacks: Sequence = ()
    logger: Any = None
    probe_set: str = ""

    @property
    def sites(self) -> list[str]:
        return list(self.acts)

    def norm(self, site: str) -> float:
        """The length other methods are scaled to: the diff-mean norm (``scale=diffmean``) or 1 (``unit``)."""
        return float(self.diffmean[site].norm()) if self.settings.probe.scale == "diffmean" else 1.0

    def scaled(self, v: torch.Tensor, site: str) -> torch.Tensor:
        """``v`` (H,) with the length :meth:`norm` of its site."""
        return v / v.norm().clamp_min(1e-12) * self.norm(site)


def hash_site(site: str) -> int:
    """Stable small integer for a site name (seeds the random baseline per site)."""
    return zlib.crc32(site.encode()) & 0xFFFF


def twin_pairs(
    meta: list[dict], rows: torch.Tensor, pos_rows: torch.Tensor, neg_rows: torch.Tensor
) -> list[tuple[int, int]] | None:
    """(i, j) indices into the pos/neg subsets for twins sharing a ``pair_index``; None without pairs."""
    pos_at = {int(r): k for k, r in enumerate(pos_rows)}
    neg_at = {int(r): k for k, r in enumerate(neg_rows)}
    twins: dict[int, dict[int, int]] = {}
    for r in rows.tolist():
        if meta[r].get("pair_index") is not None:
            twins.setdefault(meta[r]["pair_index"], {})[meta[r]["label"]] = r
    pairs = [(pos_at[t[1]], neg_at[t[0]]) for t in twins.values() if 0 in t and 1 in t]
    return pairs or None


def diffmean_method(inputs: MethodInputs) -> dict[str, torch.Tensor]:
    """mean(pos) - mean(neg), unnormalised (the paper's direction)."""
    return dict(inputs.diffmean)


def probe_method(inputs: MethodInputs, kind: ProbeKind) -> dict[str, torch.Tensor]:
    """The activation-space weight of a linear probe of every site (trained with ``Trainer.fit``), scaled; the
    probe is saved in ``<run>/probes/<kind>.safetensors``."""
    data = ProbeDataModule.from_tensors(
        inputs.acts,
        inputs.labels,
        [m["split"] for m in inputs.meta],
        batch_size=inputs.settings.probe.batch_size,
        seed=inputs.seed,
        train_split=list(inputs.fit_splits),
    )
    probe = train_probe(
        data,
        inputs.settings.probe,
        inputs.trainer,
        kind=kind,
        seed=inputs.seed,
        callbacks=inputs.callbacks,
        logger=inputs.logger,
        save_to=inputs.run_dir / "probes" / f"{kind}.safetensors",
        log_prefix=f"probe/{inputs.probe_set}/{kind}/",
    )
    return {s: inputs.scaled(v, s) for s, v in probe.directions("unit").items()}


def logistic_method(inputs: MethodInputs) -> dict[str, torch.Tensor]:
    """A logistic-regression probe (BCE on labels {0, 1})."""
    return probe_method(inputs, "logistic")


def regression_method(inputs: MethodInputs) -> dict[str, torch.Tensor]:
    """A least-squares probe on targets {-1, +1}."""
    return probe_method(inputs, "regression")


def pca_method(inputs: MethodInputs) -> dict[str, torch.Tensor]:
    """First PC of paired differences (twins when the cache has pairs, else random pairings), scaled."""
    pairs = twin_pairs(inputs.meta, inputs.fit_rows, inputs.pos_rows, inputs.neg_rows)
    return {
        s: inputs.scaled(pca_diff(a[inputs.pos_rows], a[inputs.neg_rows], pairs, seed=inputs.seed), s)
        for s, a in inputs.acts.items()
    }


def random_method(inputs: MethodInputs) -> dict[str, torch.Tensor]:
    """A Gaussian direction per site, seeded by ``seed`` and the site, of length :meth:`MethodInputs.norm`."""
    return {
        s: random_direction(a.shape[1], inputs.norm(s), inputs.seed * 100_003 + hash_site(s))
        for s, a in inputs.acts.items()
    }
