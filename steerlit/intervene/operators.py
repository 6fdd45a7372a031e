"""Steering operators on a site tensor.

All take ``h`` (B', T, H), a per-row vector ``v`` (B', H) and per-row, per-position coefficients
``c`` (B', T) and return the new (B', T, H). Rows whose coefficient is 0 come back bit-identical.

* ``add``: h + c·v (difference-in-means steering, Facchiano et al.).
* ``norm_add``: h + c·‖h‖·v̂, renormalised to ‖h‖ (Panda et al.): α is relative to the activation norm.
* ``ablate``: h − c·(h·v̂)v̂: with c = 1 the component along v is removed.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

Operator = Literal["add", "norm_add", "ablate"]
OPERATORS: tuple[Operator, ...] = get_args(Operator)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def add(h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return h + c.unsqueeze(-1) * v.unsqueeze(1)


def norm_add(h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    norm = h.norm(dim=-1, keepdim=True)
    moved = h + c.unsqueeze(-1) * norm * _unit(v).unsqueeze(1)
    moved = moved * (norm / moved.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny))
    return torch.where((c != 0).unsqueeze(-1), moved, h)


def ablate(h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    u = _unit(v).unsqueeze(1)  # (B', 1, H)
    moved = h - c.unsqueeze(-1) * (h * u).sum(-1, keepdim=True) * u
    return torch.where((c != 0).unsqueeze(-1), moved, h)


APPLY = {"add": add, "norm_add": norm_add, "ablate": ablate}


def apply_operator(name: str, h: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    if name not in APPLY:
        raise ValueError(f"Unknown steering operator {name!r}; use one of {OPERATORS}.")
    return APPLY[name](h, v, c)
