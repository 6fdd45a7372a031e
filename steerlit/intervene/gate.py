"""Probe-gated steering (SMITIN's self-monitoring): a probe read on the device scales a row's coefficient.

A :class:`ProbeGate` is a logistic probe ``p = sigmoid(h · weight + bias)`` on one site's tensor h (B', T, W)
(W = H, or head_dim for a head site) that says how present the target pole is. At every decoder call the
:class:`GateBank` of a :class:`~steerlit.intervene.steer.Steering` reads the probe on the current step's
activation at the gate site (the last position of the call, conditional rows under guidance, *before* any
steering at that site) and sets each gated row's multiplier of α:

* ``stop``: 1 until p > ``threshold``, then 0 for the rest of the generation (latched);
* ``proportional``: 1 − p at every step.

With ``smoothing`` β > 0 the gate acts on an exponential moving average of the readings,
``p̄_t = β p̄_{t-1} + (1 − β) p_t`` (``p̄_0 = p_0``): one step's reading is noisy, and a latched ``stop`` gate
would otherwise close on the first stray one.

The multiplier applies to that step's steering at the gate site and after it in the forward pass (sites before
the gate site use the previous step's multiplier; all gates are open at the prefill). It stays on the device:
no host synchronisation during generation. The bank logs every row's multiplier at every step (the gate's
openness, 1 = open) on the device; :meth:`GateBank.openness` reads the log once, at the end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import safe_open

from steerlit.intervene.hooks import DecodeState

GateMode = Literal["stop", "proportional"]
GATE_MODES: tuple[GateMode, ...] = get_args(GateMode)


class GateError(ValueError):
    """A probe gate that cannot be used: bad mode or threshold, wrong width, unreadable probe file."""


def check_gate_levels(threshold: float, smoothing: float) -> None:
    """A gate's ``threshold`` is a probability in (0, 1) and its ``smoothing`` β is in [0, 1) (GateError)."""
    if not 0.0 < float(threshold) < 1.0:
        raise GateError(f"Gate threshold {threshold} is not a probability in (0, 1).")
    if not 0.0 <= float(smoothing) < 1.0:
        raise GateError(f"Gate smoothing {smoothing} is not in [0, 1).")


@dataclass(frozen=True, eq=False)
class ProbeGate:
    """A logistic probe at ``site``: ``weight`` (W,) and ``bias`` in activation space; ``mode``, ``threshold``
    and ``smoothing`` (β in [0, 1)) as in the module docstring."""

    site: str
    weight: torch.Tensor
    bias: float = 0.0
    mode: GateMode = "stop"
    threshold: float = 0.5
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        weight = torch.as_tensor(self.weight).detach().float()
        if weight.dim() != 1 or not torch.isfinite(weight).all():
            raise GateError(
                f"A gate probe's weight is one finite (W,) vector, got shape {tuple(weight.shape)}."
            )
        if self.mode not in GATE_MODES:
            raise GateError(f"Unknown gate mode {self.mode!r}; use one of {GATE_MODES}.")
        check_gate_levels(self.threshold, self.smoothing)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", float(self.bias))


def load_probe_gate(
    path: str | Path, site: str, *, mode: GateMode = "stop", threshold: float = 0.5, smoothing: float = 0.0
) -> ProbeGate:
    """The gate of one site of a saved linear probe (:meth:`steerlit.directions.probes.LinearProbeModule.save`:
    ``weight``/``bias``/``mean``/``std``, sites in the metadata), mapped to activation space:
    ``w / std`` and ``b - (mean / std) · w``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            sites = json.loads((f.metadata() or {})["sites"])
            t = {k: f.get_tensor(k) for k in ("weight", "bias", "mean", "std")}
    except (OSError, KeyError, ValueError) as err:
        raise GateError(
            f"Cannot read a linear probe from {str(path)!r} ({err}); save one with train_probe."
        ) from err
    if site not in sites:
        raise GateError(f"Probe file {str(path)!r} has no probe for site {site!r}; it has {sites}.")
    i = sites.index(site)
    w = t["weight"][i] / t["std"][i]
    bias = float(t["bias"][i] - (t["mean"][i] * w).sum())
    return ProbeGate(site, w, bias, mode, threshold, smoothing)


class GateBank:
    """The gates of R rows at one site: weights (R, W), biases (R,), per-row mode and threshold, on the device.

    Rows without a gate keep a multiplier of 1. The multiplier state (B,) is per prompt of the batch (B = R,
    or R x repeats for a broadcast steering) and is reset at every prefill."""

    def __init__(self, site: str, rows: int, width: int, positions: int):
        self.site, self.positions = site, positions
        self.weight = torch.zeros(rows, width)
        self.bias = torch.zeros(rows)
        self.threshold = torch.full((rows,), 0.5)
        self.smoothing = torch.zeros(rows)
        self.smoothed: torch.Tensor | None = None  # (B,) the moving average p̄
        self.stop = torch.zeros(rows, dtype=torch.bool)
        self.gated = torch.zeros(rows, dtype=torch.bool)
        self.multiplier: torch.Tensor | None = None
        self._log: torch.Tensor | None = None  # (P, B) multipliers, NaN where not gated or not read
        self._read_in_call = -1  # DecodeState.calls of the last update

    def set_row(self, row: int, gate: ProbeGate) -> None:
        if gate.site != self.site:
            raise GateError(f"This bank's gates read {self.site!r}, not {gate.site!r}.")
        if gate.weight.shape != self.weight.shape[1:]:
            raise GateError(
                f"Gate probe at {gate.site} has width {gate.weight.shape[0]}, the site has {self.weight.shape[1]}."
            )
        if self.gated[row] and not (
            torch.equal(self.weight[row], gate.weight) and self.bias[row] == gate.bias
        ):
            raise GateError(f"Row {row} has two different gates; a row takes one gate.")
        self.weight[row], self.bias[row] = gate.weight, gate.bias
        self.threshold[row], self.stop[row] = gate.threshold, gate.mode == "stop"
        self.smoothing[row] = gate.smoothing
        self.gated[row] = True

    def finalize(self, device, dtype) -> None:
        self.weight = self.weight.to(device, dtype)
        for name in ("bias", "threshold", "smoothing"):
            setattr(self, name, getattr(self, name).to(device, torch.float32))
        self.stop, self.gated = self.stop.to(device), self.gated.to(device)

    def update(self, h: torch.Tensor, state: DecodeState, repeats: int) -> None:
        """Read the probe on the last position of ``h`` (B', T, W) and update the multipliers (B,)."""
        rows = h[: state.text_batch] if state.cfg else h
        weight, bias, stop, threshold, gated, beta = (
            t if repeats == 1 else t.repeat_interleave(repeats, 0)
            for t in (self.weight, self.bias, self.stop, self.threshold, self.gated, self.smoothing)
        )
        p = torch.sigmoid((rows[:, -1].float() * weight.float()).sum(-1) + bias)  # (B,)
        if state.is_prefill or self.multiplier is None or self.multiplier.shape != p.shape:
            self.multiplier, self.smoothed = torch.ones_like(p), p
            self._log = torch.full((self.positions, p.shape[0]), float("nan"), device=p.device)
        self.smoothed = beta * self.smoothed + (1.0 - beta) * p
        p = self.smoothed
        latched = torch.where(p > threshold, torch.zeros_like(p), self.multiplier)
        self.multiplier = torch.where(gated, torch.where(stop, latched, 1.0 - p), torch.ones_like(p))
        self._read_in_call = state.calls
        position = min(state.start + state.seq_len - 1, self.positions - 1)
        self._log[position] = torch.where(gated, self.multiplier, float("nan"))

    def factor(self, rows: torch.Tensor, state: DecodeState, repeats: int, dtype) -> torch.Tensor:
        """Multipliers (B', 1) for a table's gated ``rows`` (R,) bool (others 1); B' = B, or 2B under guidance.
        Gates are open at a prefill until the gate site is read in that call."""
        gated = rows.repeat_interleave(repeats, 0) if repeats != 1 else rows
        fresh = self.multiplier is None or (state.is_prefill and self._read_in_call != state.calls)
        mult = torch.ones(gated.shape, device=gated.device) if fresh else self.multiplier
        out = torch.where(gated, mult, torch.ones_like(mult)).to(dtype)
        return (torch.cat([out, out]) if state.cfg else out)[:, None]

    def multipliers(self) -> torch.Tensor:
        """Every prompt's multiplier at every decoding position (P, B) on the CPU (NaN: not gated or not read);
        one host read."""
        if self._log is None:
            raise GateError("The gate was never read: run a generation inside the steering first.")
        return self._log.cpu()

    def openness(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Mean multiplier over the gated prompts ``rows`` (None: all) at each decoding position (P,) on the CPU
        (NaN where none was read); prompts are indexed as in the batch (B = R, or R x repeats)."""
        if self._log is None:
            return torch.full((self.positions,), float("nan"))
        log = self._log.cpu()
        log = log if rows is None else log[:, list(rows)]
        return log.nanmean(dim=1)
