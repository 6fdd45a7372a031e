"""Difference of class means: a pure function and a streaming accumulator.

The paper's direction for a concept at a site is ``mean(pos) - mean(neg)`` over the cached
activations of the two poles (unnormalised). :class:`ClassSums` gets the same vectors without
holding the activations: it keeps, per site, the float64 sum of each class and the counts, so its
memory is ``sites × 2 × H`` whatever the number of prompts, and partial sums from several
processes (DDP ranks) or shards add up exactly (up to float64 rounding).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open

from steerlit.files import atomic_save_safetensors


def diff_mean(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``mean(pos) - mean(neg)``: pos (N1, H), neg (N2, H) -> (H,) float32 (computed in float64)."""
    if pos.dim() != 2 or neg.dim() != 2 or pos.shape[1] != neg.shape[1]:
        raise ValueError(
            f"diff_mean needs (N1, H) and (N2, H) tensors, got {tuple(pos.shape)} and {tuple(neg.shape)}."
        )
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(
            f"diff_mean needs examples of both classes, got {len(pos)} positive and {len(neg)} negative."
        )
    return (pos.double().mean(0) - neg.double().mean(0)).float()


class ClassSums:
    """Per-site, per-class running sums (float64) and counts.

    ``sums[site]`` (2, H): row 0 = sum over negatives (label 0), row 1 = positives (label 1);
    ``counts[site]`` (2,). ``sites``/``hidden_size`` preallocate zeros, which DDP needs (every rank
    must all-reduce the same tensors, also a rank that saw no batch).
    """

    def __init__(self, sites: Iterable[str] = (), hidden_size: int | None = None):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        for site in sites:
            if hidden_size is None:
                raise ValueError("ClassSums(sites=...) needs hidden_size to preallocate.")
            self._ensure(site, hidden_size)

    def _ensure(self, site: str, h: int) -> None:
        if site not in self.sums:
            self.sums[site] = torch.zeros(2, h, dtype=torch.float64)
            self.counts[site] = torch.zeros(2, dtype=torch.float64)
        elif self.sums[site].shape[1] != h:
            raise ValueError(
                f"Site {site}: hidden size {h} does not match earlier {self.sums[site].shape[1]}."
            )

    @property
    def sites(self) -> list[str]:
        return list(self.sums)

    def update(self, site: str, acts: torch.Tensor, labels: torch.Tensor) -> None:
        """Add activations (N, H) with labels (N,) in {0, 1}."""
        if acts.dim() != 2 or labels.shape != (acts.shape[0],):
            raise ValueError(
                f"update needs acts (N, H) and labels (N,), got {tuple(acts.shape)}, {tuple(labels.shape)}."
            )
        self._ensure(site, acts.shape[1])
        acts = acts.detach().to("cpu", torch.float64)
        labels = labels.detach().to("cpu").long()
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError("labels must be 0 (negative pole) or 1 (positive pole).")
        self.sums[site].index_add_(0, labels, acts)
        self.counts[site] += torch.bincount(labels, minlength=2).double()

    def update_all(self, acts: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        for site, a in acts.items():
            self.update(site, a, labels)

    def merge(self, other: ClassSums) -> ClassSums:
        """Add another accumulator's sums and counts into this one (in place); returns self."""
        for site in other.sums:
            self._ensure(site, other.sums[site].shape[1])
            self.sums[site] += other.sums[site]
            self.counts[site] += other.counts[site]
        return self

    def all_reduce(self, group=None) -> ClassSums:
        """Sum over all processes of the default (or given) process group; no-op without one.

        All ranks must hold the same sites (in the same order once sorted) and hidden sizes. With the
        NCCL backend the (small) flat buffer travels through the current CUDA device.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return self
        sites = sorted(self.sums)
        if not sites:
            return self
        flat = torch.cat([torch.cat([self.sums[s].flatten(), self.counts[s]]) for s in sites])
        if dist.get_backend(group) == "nccl":  # NCCL reduces CUDA tensors only
            flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat = flat.cpu()
        offset = 0
        for s in sites:
            n = self.sums[s].numel()
            self.sums[s] = flat[offset : offset + n].view_as(self.sums[s]).clone()
            self.counts[s] = flat[offset + n : offset + n + 2].clone()
            offset += n + 2
        return self

    def means(self) -> dict[str, torch.Tensor]:
        """``{site: (2, H) float64}`` class means (row 0 negative, row 1 positive)."""
        out = {}
        for site, s in self.sums.items():
            c = self.counts[site]
            if (c == 0).any():
                raise ValueError(
                    f"Site {site}: no examples of class {int((c == 0).nonzero()[0])}; need both poles."
                )
            out[site] = s / c[:, None]
        return out

    def directions(self) -> dict[str, torch.Tensor]:
        """``{site: mean_pos - mean_neg}`` (H,) float32."""
        return {site: (m[1] - m[0]).float() for site, m in self.means().items()}

    def n_per_class(self) -> dict[str, int]:
        c = next(iter(self.counts.values())) if self.counts else torch.zeros(2)
        return {"0": int(c[0]), "1": int(c[1])}

    # ------------------------------------------------------------------ files
    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {}
        for site in self.sums:
            out[f"{prefix}sums/{site}"] = self.sums[site].contiguous()
            out[f"{prefix}counts/{site}"] = self.counts[site].contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], prefix: str = "") -> ClassSums:
        cs = cls()
        for name, t in tensors.items():
            if name.startswith(f"{prefix}sums/"):
                site = name[len(prefix) + 5 :]
                cs.sums[site] = t.double()
                cs.counts[site] = tensors[f"{prefix}counts/{site}"].double()
        return cs


def save_class_sums(
    path: str | Path, by_split: Mapping[str, ClassSums], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``{split: ClassSums}`` to one safetensors file (names ``<split>/sums/<site>``) atomically."""
    tensors = {}
    for split, cs in by_split.items():
        tensors.update(cs.tensors(prefix=f"{split}/"))
    meta = {"splits": json.dumps(list(by_split)), **dict(metadata or {})}
    return atomic_save_safetensors(path, tensors, meta)


def load_class_sums(path: str | Path) -> dict[str, ClassSums]:
    """Read what :func:`save_class_sums` wrote: ``{split: ClassSums}``."""
    with safe_open(str(path), framework="pt") as f:
        splits = json.loads((f.metadata() or {}).get("splits", "[]"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return {s: ClassSums.from_tensors(tensors, prefix=f"{s}/") for s in splits}


def combined(by_split: Mapping[str, ClassSums], splits: Iterable[str]) -> ClassSums:
    """Sum of the accumulators of several splits (e.g. train+val)."""
    out = ClassSums()
    for s in splits:
        out.merge(by_split[s])
    return out
