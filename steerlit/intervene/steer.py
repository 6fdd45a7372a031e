"""Per-row steering during generation.

A batch of R rows shares one ``generate`` call; each row carries its own list of
:class:`Intervention` (several directions at once are several interventions). Vectors and
coefficient tables go to the model's device and dtype once, when the context is entered:

* per target site and slot, a vector table ``V`` (R, H) and coefficient tables ``C`` (R, P) for
  the conditional and the unconditional CFG half, P = the decoder's maximum positions;
* at each decoder call covering positions ``start .. start+T-1``, the hook applies
  ``operator(h, V, C[:, start:start+T])`` to the site tensor (B', T, H), B' = R or 2R (guidance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from steerlit.intervene.hooks import DecodeState, SiteHookContext
from steerlit.intervene.operators import OPERATORS, apply_operator
from steerlit.intervene.schedules import Constant, Schedule, make_schedule
from steerlit.models.sites import Site

CfgHalf = Literal["both", "cond", "uncond"]
CFG_HALVES: tuple[CfgHalf, ...] = get_args(CfgHalf)


class SteeringError(ValueError):
    """Invalid steering input: unknown site, wrong hidden size, non-finite vector, bad option."""


@dataclass(frozen=True)
class Intervention:
    """One direction applied to one row: ``vectors`` maps target site names to (H,) tensors."""

    vectors: Mapping[str, torch.Tensor]
    alpha: float = 1.0
    operator: str = "add"
    schedule: Schedule = field(default_factory=Constant)
    half: str = "both"


RowSteering = Sequence[Intervention]  # empty: the row is not steered


def validate_intervention(iv: Intervention, adapter) -> dict[Site, torch.Tensor]:
    """Check an intervention against the model; return its vectors keyed by parsed site."""
    if iv.operator not in OPERATORS:
        raise SteeringError(f"Unknown steering operator {iv.operator!r}; use one of {OPERATORS}.")
    if iv.half not in CFG_HALVES:
        raise SteeringError(f"Unknown CFG half policy {iv.half!r}; use one of {CFG_HALVES}.")
    if not math.isfinite(float(iv.alpha)):
        raise SteeringError(f"Steering coefficient alpha={iv.alpha} is not finite; use a finite number.")
    if not iv.vectors:
        raise SteeringError("An intervention has no target sites; give at least one {site: vector}.")
    out = {}
    for name, vec in iv.vectors.items():
        site = adapter.parse_site(name)
        vec = torch.as_tensor(vec)
        if vec.shape != (adapter.hidden_size,):
            raise SteeringError(
                f"Vector for {site.name} has shape {tuple(vec.shape)}, but the model's hidden size is "
                f"{adapter.hidden_size}: use directions computed on this model ({adapter.model_id})."
            )
        if not torch.isfinite(vec).all():
            raise SteeringError(
                f"Vector for {site.name} contains NaN or inf values; recompute the direction."
            )
        out[site] = vec
    return out


class _SiteSlot:
    """One (site, operator) slot: vector table (R, H) and coefficient tables (R, P) per CFG half."""

    def __init__(self, operator: str, rows: int, hidden: int, positions: int):
        self.operator = operator
        self.vec = torch.zeros(rows, hidden, dtype=torch.float64)
        self.coef = {"cond": np.zeros((rows, positions)), "uncond": np.zeros((rows, positions))}
        self.tables: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_row(self, row: int, vec: torch.Tensor, iv: Intervention, positions: int) -> None:
        self.vec[row] = vec.double()
        values = float(iv.alpha) * make_schedule(iv.schedule).values(positions)
        for half in ("cond", "uncond"):
            if iv.half in ("both", half):
                self.coef[half][row] = values

    def finalize(self, device, dtype) -> None:
        """Move to the model's device/dtype once: tables for a plain batch (R) and a CFG batch (2R)."""
        vec = self.vec.to(device, dtype)
        cond = torch.as_tensor(self.coef["cond"]).to(device, dtype)
        uncond = torch.as_tensor(self.coef["uncond"]).to(device, dtype)
        self.tables = {False: (vec, cond), True: (torch.cat([vec, vec]), torch.cat([cond, uncond]))}


class Steering(SiteHookContext):
    """Steer a batch of rows during ``generate``.

    ``rows``: one :class:`RowSteering` per batch row (in prompt order), or a single RowSteering
    applied to every row. Hooks are removed on exit, also when generation raises.
    """

    def __init__(self, adapter, rows: Sequence[RowSteering] | RowSteering):
        self.adapter = adapter
        if rows and all(isinstance(r, Intervention) for r in rows):
            rows, self.broadcast = [list(rows)], True
        else:
            self.broadcast = False
        self.rows = [list(r) for r in rows]
        if not self.rows:
            raise SteeringError("Steering needs at least one row.")
        positions = adapter.max_positions
        self.slots: dict[Site, list[_SiteSlot]] = {}
        for r, row in enumerate(self.rows):
            used: dict[tuple[Site, str], int] = {}
            for iv in row:
                for site, vec in validate_intervention(iv, adapter).items():
                    k = used.get((site, iv.operator), 0)
                    used[(site, iv.operator)] = k + 1
                    slots = [s for s in self.slots.setdefault(site, []) if s.operator == iv.operator]
                    if k >= len(slots):
                        slot = _SiteSlot(iv.operator, len(self.rows), adapter.hidden_size, positions)
                        self.slots[site].append(slot)
                    else:
                        slot = slots[k]
                    slot.set_row(r, vec, iv, positions)
        for slots in self.slots.values():
            for slot in slots:
                slot.finalize(adapter.device, adapter.dtype)

    def _rows_for(self, state: DecodeState, h: torch.Tensor) -> int:
        batch = state.text_batch if state.cfg else h.shape[0]
        if self.broadcast:
            return batch
        if batch != len(self.rows):
            raise SteeringError(
                f"Steering was built for {len(self.rows)} rows but the batch has {batch} prompts; "
                "give one RowSteering per prompt (or a single one for all)."
            )
        return batch

    def _make_fn(self, site: Site):
        slots = self.slots[site]

        def fn(h: torch.Tensor, state: DecodeState):
            batch = self._rows_for(state, h)
            stop = state.start + state.seq_len
            if stop > self.adapter.max_positions:
                raise SteeringError(
                    f"Position {stop} exceeds the decoder's {self.adapter.max_positions} positions."
                )
            for slot in slots:
                vec, coef = slot.tables[state.cfg]
                coef = coef[:, state.start : stop]
                if self.broadcast:  # one row (two under CFG: cond, uncond) -> one copy per prompt
                    vec, coef = vec.repeat_interleave(batch, 0), coef.repeat_interleave(batch, 0)
                h = apply_operator(slot.operator, h, vec, coef)
            return h

        return fn

    def hooked_sites(self):
        return list(self.slots)

    @property
    def sites(self) -> list[str]:
        return sorted(s.name for s in self.slots)
