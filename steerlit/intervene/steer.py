"""Per-row steering during generation.

A batch of R rows shares one ``generate`` call; each row carries its own list of
:class:`Intervention` (several directions at once are several interventions). Vectors and
coefficient tables go to the model's device and dtype once, when the :class:`Steering` is built:

* per target site and slot, a :class:`SiteTable`: a vector table ``V`` (R, H) and coefficient tables
  ``C`` (R, P) for the conditional and the unconditional CFG half, P = the decoder's maximum positions;
* at each decoder call covering positions ``start .. start+T-1``, the hook applies
  ``operator(h, V, C[:, start:start+T])`` to the site tensor (B', T, H), B' = R or 2R (guidance);
* head sites (``attn_head.L.h``, :mod:`steerlit.models.sites`) work the same on (B', T, head_dim) tensors with
  (head_dim,) vectors;
* an intervention with a probe gate (``gate``, or the ``probe_gate`` schedule) has its coefficients multiplied,
  row by row and step by step, by the gate of :mod:`steerlit.intervene.gate` (on the device, no host sync).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from steerlit.intervene.gate import GateBank, ProbeGate, load_probe_gate
from steerlit.intervene.hooks import DecodeState, SiteHookContext
from steerlit.intervene.operators import OPERATORS, Operator, apply_operator
from steerlit.intervene.schedules import Constant, ProbeGated, Schedule, make_schedule
from steerlit.models.sites import Site, UnknownSiteError, site_width, split_site, width_mismatch

CfgHalf = Literal["both", "cond", "uncond"]
CFG_HALVES: tuple[CfgHalf, ...] = get_args(CfgHalf)


class SteeringError(ValueError):
    """Invalid steering input: unknown site, wrong hidden size, non-finite vector, bad option."""


@dataclass(frozen=True)
class Intervention:
    """One direction applied to one row: ``vectors`` maps target site names to (H,) tensors ((head_dim,) at
    head sites). ``gate``: a :class:`~steerlit.intervene.gate.ProbeGate` that scales α down as the target pole
    appears (a ``probe_gate`` schedule builds one from a probe file)."""

    vectors: Mapping[str, torch.Tensor]
    alpha: float = 1.0
    operator: Operator = "add"
    schedule: Schedule | Mapping = field(default_factory=Constant)
    half: CfgHalf = "both"
    gate: ProbeGate | None = None

    def probe_gate(self) -> ProbeGate | None:
        """The gate: ``gate``, else the one a ``probe_gate`` schedule names (loaded from its file), else None."""
        if self.gate is not None:
            return self.gate
        sched = make_schedule(self.schedule)
        if isinstance(sched, ProbeGated):
            return load_probe_gate(
                sched.probe, sched.site, mode=sched.mode, threshold=sched.threshold, smoothing=sched.smoothing
            )
        return None


RowSteering = Sequence[Intervention]  # empty: the row is not steered


def is_broadcast(steering: Sequence[RowSteering] | RowSteering) -> bool:
    """Whether ``steering`` is one :data:`RowSteering` for every row (interventions), not one per row."""
    return bool(steering) and all(isinstance(r, Intervention) for r in steering)


def parse_model_site(adapter, name: str | Site) -> Site:
    """A site of this adapter's model (layers and heads range-checked), or :class:`SteeringError`."""
    try:
        return adapter.parse_site(name)
    except UnknownSiteError as err:
        raise SteeringError(str(err)) from None


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
        site = parse_model_site(adapter, name)
        vec = torch.as_tensor(vec)
        mismatch = width_mismatch(adapter.decoder_layers, site, vec.shape)
        if mismatch:
            raise SteeringError(
                f"Vector for {site.name} has shape {tuple(vec.shape)}, but the model's site has {mismatch}: "
                f"use directions computed on this model ({adapter.model_id})."
            )
        if not torch.isfinite(vec).all():
            raise SteeringError(
                f"Vector for {site.name} contains NaN or inf values; recompute the direction."
            )
        out[site] = vec
    return out


def hook_only_reason(steering: Sequence[RowSteering] | RowSteering | None) -> str | None:
    """Why a steering can only run through :class:`Steering`'s hooks (None: its tables say everything): head
    sites (``attn_head.L.h``) and probe gates have no table form that another decode loop could read."""
    rows = steering or []
    rows = [rows] if is_broadcast(rows) else rows
    for row in rows:
        for iv in row:
            if any(split_site(name).is_head for name in iv.vectors):
                return "steering at attention-head sites (attn_head.L.h) is applied by hooks only"
            if iv.gate is not None or isinstance(make_schedule(iv.schedule), ProbeGated):
                return "probe-gated steering reads a probe at every step through hooks only"
    return None


class SiteTable:
    """The steering of one (site, operator) slot for a batch of R rows, P = the decoder's maximum positions.

    While rows are added (:meth:`set_row`) it holds a float64 vector table (R, H) on the CPU and float64
    coefficient tables (R, P) for the conditional and the unconditional CFG half (row ``r``, position ``p``:
    α·schedule(p) of that row's intervention, 0 for rows or halves it does not steer). :meth:`finalize` moves
    them to the model's device and dtype once; :meth:`batch` then gives the tables of one decoder batch.
    ``gated`` (R,) bool: the rows whose coefficients a probe gate scales (``any_gated``: whether any row is).
    """

    def __init__(self, operator: str, rows: int, hidden: int, positions: int):
        self.operator = operator
        self.vectors = torch.zeros(rows, hidden, dtype=torch.float64)
        self.coefficients = {"cond": np.zeros((rows, positions)), "uncond": np.zeros((rows, positions))}
        self.gated = torch.zeros(rows, dtype=torch.bool)
        self.any_gated = False
        self._device_tables: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_row(
        self, row: int, vec: torch.Tensor, iv: Intervention, positions: int, gated: bool = False
    ) -> None:
        """Row ``row`` is steered by ``iv`` with vector ``vec`` (W,) at this site (``gated``: by a probe gate)."""
        self.gated[row] = bool(gated)
        self.any_gated = self.any_gated or bool(gated)
        self.vectors[row] = vec.double()
        values = float(iv.alpha) * make_schedule(iv.schedule).values(positions)
        for half, table in self.coefficients.items():
            if iv.half in ("both", half):
                table[row] = values

    def finalize(self, device, dtype) -> None:
        """Move to the model's device/dtype once: tables for a plain batch (R) and a CFG batch (2R)."""
        vec = self.vectors.to(device, dtype)
        cond = torch.as_tensor(self.coefficients["cond"]).to(device, dtype)
        uncond = torch.as_tensor(self.coefficients["uncond"]).to(device, dtype)
        self._device_tables = {False: (vec, cond), True: (torch.cat([vec, vec]), torch.cat([cond, uncond]))}
        self.gated = self.gated.to(device)

    def batch(
        self, cfg: bool, repeats: int = 1, positions: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables of one decoder batch on the model's device: vectors (B', H) and coefficients (B', T).

        ``cfg``: the batch is [conditional rows; unconditional rows] (B' = 2R), else B' = R. ``repeats``: each
        row repeated that many times (a steering broadcast over ``repeats`` prompts). ``positions``: the
        coefficient columns (decoding positions) wanted, T of them."""
        if not self._device_tables:
            raise RuntimeError("SiteTable.batch() before finalize(): call finalize(device, dtype) first.")
        vec, coef = self._device_tables[cfg]
        coef = coef[:, positions]
        if repeats != 1:
            vec, coef = vec.repeat_interleave(repeats, 0), coef.repeat_interleave(repeats, 0)
        return vec, coef


class Steering(SiteHookContext):
    """Steer a batch of rows during ``generate``.

    ``rows``: one :class:`RowSteering` per batch row (in prompt order), or a single RowSteering
    applied to every row (``broadcast``). ``tables``: per target site, its :class:`SiteTable` slots (a row
    with two interventions of the same operator at one site uses two slots). ``gates``: per gate site, the
    :class:`~steerlit.intervene.gate.GateBank` of the rows it gates (a row takes at most one gate). Hooks are
    removed on exit, also when generation raises. Other decode loops (the fast engine) read ``tables`` without
    hooks.
    """

    def __init__(self, adapter, rows: Sequence[RowSteering] | RowSteering):
        self.adapter = adapter
        if is_broadcast(rows):
            rows, self.broadcast = [list(rows)], True
        else:
            self.broadcast = False
        self.rows = [list(r) for r in rows]
        if not self.rows:
            raise SteeringError("Steering needs at least one row.")
        self.tables: dict[Site, list[SiteTable]] = {}
        self.gates: dict[Site, GateBank] = {}
        for r, row in enumerate(self.rows):
            self._add_row(r, row)
        for tables in self.tables.values():
            for table in tables:
                table.finalize(adapter.device, adapter.dtype)
        for bank in self.gates.values():
            bank.finalize(adapter.device, adapter.dtype)

    def _add_gate(self, r: int, gate: ProbeGate) -> None:
        site = parse_model_site(self.adapter, gate.site)
        if site not in self.gates:
            width = site_width(self.adapter.decoder_layers, site)
            self.gates[site] = GateBank(site.name, len(self.rows), width, self.adapter.max_positions)
        if any(bool(b.gated[r]) for s, b in self.gates.items() if s != site):
            raise SteeringError(f"Row {r} has gates at two sites; a row takes one gate.")
        try:
            self.gates[site].set_row(r, gate)
        except ValueError as err:
            raise SteeringError(str(err)) from None

    def _add_row(self, r: int, row: RowSteering) -> None:
        positions = self.adapter.max_positions
        used: dict[tuple[Site, str], int] = {}
        for iv in row:
            vectors = validate_intervention(iv, self.adapter)
            gate = iv.probe_gate()
            if gate is not None:
                self._add_gate(r, gate)
            for site, vec in vectors.items():
                k = used.get((site, iv.operator), 0)
                used[(site, iv.operator)] = k + 1
                same_op = [t for t in self.tables.setdefault(site, []) if t.operator == iv.operator]
                if k >= len(same_op):
                    width = site_width(self.adapter.decoder_layers, site)
                    table = SiteTable(iv.operator, len(self.rows), width, positions)
                    self.tables[site].append(table)
                else:
                    table = same_op[k]
                table.set_row(r, vec, iv, positions, gated=gate is not None)

    def repeats_for(self, batch: int) -> int:
        """How often each table row is repeated for a batch of ``batch`` prompts: ``batch`` for a broadcast
        steering, else 1 (raises :class:`SteeringError` when the per-row steering has another row count)."""
        if self.broadcast:
            return batch
        if batch != len(self.rows):
            raise SteeringError(
                f"Steering was built for {len(self.rows)} rows but the batch has {batch} prompts; "
                "give one RowSteering per prompt (or a single one for all)."
            )
        return 1

    def check_positions(self, stop: int) -> None:
        """Refuse decoding positions ``0 .. stop - 1`` beyond the coefficient tables (the decoder's positions)."""
        if self.tables and stop > self.adapter.max_positions:
            raise SteeringError(
                f"Decoding position {stop - 1} exceeds the decoder's {self.adapter.max_positions} positions; "
                "generate fewer steps."
            )

    def _make_fn(self, site: Site):
        tables = self.tables.get(site, [])
        gates = self.gates.get(site)

        def fn(h: torch.Tensor, state: DecodeState):
            repeats = self.repeats_for(state.text_batch if state.cfg else h.shape[0])
            stop = state.start + state.seq_len
            self.check_positions(stop)
            if gates is not None:  # read the probe before this site's own steering
                gates.update(h, state, repeats)
            for table in tables:
                vec, coef = table.batch(state.cfg, repeats, slice(state.start, stop))
                for bank in self.gates.values() if table.any_gated else ():
                    coef = coef * bank.factor(table.gated & bank.gated, state, repeats, coef.dtype)
                h = apply_operator(table.operator, h, vec, coef)
            return h

        return fn

    def hooked_sites(self):
        return list(self.tables) + [s for s in self.gates if s not in self.tables]

    @property
    def sites(self) -> list[str]:
        return sorted(s.name for s in self.tables)

    def _gate_bank(self, site: str | None) -> GateBank:
        """The gate bank at the site named ``site``, or :class:`SteeringError` naming the gate sites there are."""
        banks = {s.name: b for s, b in self.gates.items()}
        if site not in banks:
            raise SteeringError(
                f"This steering has no probe gate at {site!r}; its gate sites: {sorted(banks)}."
            )
        return banks[site]

    def gate_multipliers(self, site: str) -> np.ndarray:
        """The gate log at ``site`` after a generation: each prompt's multiplier per decoding position (P, B)
        (NaN where the prompt is not gated there); one host read."""
        return self._gate_bank(site).multipliers().numpy()

    def gate_openness(self, site: str | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """Mean gate multiplier over the prompts ``rows`` (None: all) gated at ``site`` (None: the only gate site)
        per decoding position (P,) after a generation (NaN: not read); one host read. :class:`SteeringError`
        without such a gate."""
        if site is None and len(self.gates) == 1:
            site = next(iter(self.gates)).name
        return self._gate_bank(site).openness(rows).numpy()
