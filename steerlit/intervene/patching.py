"""Interchange activation patching: put a source run's activations into a target run, per row.

The source prompts are generated once while an :class:`~steerlit.intervene.record.ActivationRecorder`
records the chosen sites with ``reduction="all"`` and ``half="both"`` (:func:`record_sources`): one tensor
(S', N, W) per site, S' = S prompts or 2S under guidance ([conditional; unconditional]), N decoding positions
(the recorder drops ``generate``'s extra first prefill), W = H or head_dim. Then the targets are generated in
one batch of R rows inside :class:`Patching`: row ``r`` takes source ``rows[r].source``'s values at its sites,
at the decoding positions of its :class:`StepWindow`, in both CFG halves (or only the conditional one). The
hooks run at every decoder call, prefill included, so the KV cache holds the patched values and everything
downstream sees them. Rows that patch nothing at a site come back unchanged (``torch.where``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from steerlit.intervene.hooks import DecodeState, SiteHookContext
from steerlit.intervene.record import ActivationRecorder
from steerlit.models.sites import Site

PatchHalf = Literal["both", "cond"]  # the CfgHalf choices patching takes: an exact interchange, or cond only
PATCH_HALVES: tuple[PatchHalf, ...] = get_args(PatchHalf)


class PatchingError(ValueError):
    """Patching input that cannot work: unknown or unrecorded site, bad source index, wrong batch."""


@dataclass(frozen=True, order=True)
class StepWindow:
    """Decoding positions ``start <= t < stop`` (``stop=None``: to the end of the generation)."""

    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise PatchingError(
                f"Step window [{self.start}, {self.stop}) is empty or negative; use start < stop."
            )

    @property
    def name(self) -> str:
        """``0-25``, ``25-end``: the window's label in tables and plots (:meth:`parse` reads it back)."""
        return f"{self.start}-{'end' if self.stop is None else self.stop}"

    @classmethod
    def parse(cls, text: str) -> StepWindow:
        """``"0-25"`` -> [0, 25); ``"25-end"`` -> [25, end of the generation)."""
        start, sep, stop = str(text).strip().partition("-")
        try:
            return cls(int(start), None if stop == "end" else int(stop))
        except ValueError:
            if not sep or not start.isdigit():
                raise PatchingError(
                    f"Step window {text!r} is not 'start-stop' or 'start-end' (e.g. '0-25')."
                ) from None
            raise

    def mask(self, positions: int) -> torch.Tensor:
        """(positions,) bool: True inside the window."""
        t = torch.arange(positions)
        return (t >= self.start) & (t < (positions if self.stop is None else self.stop))


WHOLE_GENERATION = StepWindow(0, None)


def first_steps(k: int) -> StepWindow:
    """The first ``k`` decoding steps (the prefill's step 0 included)."""
    return StepWindow(0, int(k))


@dataclass(frozen=True)
class PatchRow:
    """One patched target generation: the ``sites`` that take source ``source``'s values inside ``window``
    (``sites=()``: the target run unchanged)."""

    source: int
    sites: tuple[str, ...] = ()
    window: StepWindow = WHOLE_GENERATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))


def record_sources(adapter, sites: Sequence[str], run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Record ``sites`` while ``run()`` generates the source prompts: ``{site: (S', N, W)}`` in the model's
    dtype on the CPU, both CFG halves (S' = 2S under guidance)."""
    with ActivationRecorder(adapter, sites, reduction="all", half="both", dtype=adapter.dtype) as rec:
        run()
    return rec.results


class Patching(SiteHookContext):
    """Patch R target rows from recorded sources during one ``generate`` (or teacher-forced forward).

    ``sources``: ``{site: (S', N, W)}`` from :func:`record_sources`; ``rows``: one :class:`PatchRow` per batch
    row, in prompt order; ``half``: ``both`` CFG halves patched (exact interchange) or only ``cond``.
    """

    def __init__(
        self,
        adapter,
        sources: Mapping[str, torch.Tensor],
        rows: Sequence[PatchRow],
        *,
        half: PatchHalf = "both",
    ):
        if half not in PATCH_HALVES:
            raise PatchingError(f"Patching half {half!r}: use 'both' or 'cond'.")
        self.adapter, self.rows, self.half = adapter, list(rows), half
        if not self.rows:
            raise PatchingError("Patching needs at least one row.")
        named = {s.name: s for s in adapter.parse_sites(list(sources))} if sources else {}
        wanted = sorted({name for row in self.rows for name in row.sites})
        missing = [n for n in wanted if n not in named]
        if missing:
            raise PatchingError(
                f"Rows patch sites {missing} that were not recorded; record them in the source run."
            )
        if any(r.source < 0 for r in self.rows):
            raise PatchingError(
                "Source indices must be >= 0 (the row of the source prompt in the source run)."
            )
        self.max_source = max(r.source for r in self.rows)
        self.index = torch.tensor([r.source for r in self.rows], device=adapter.device)
        self.tables: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in wanted:
            values = sources[name].to(adapter.device, adapter.dtype)  # (S', N, W)
            masks = [r.window.mask(values.shape[1]) if name in r.sites else None for r in self.rows]
            mask = torch.stack(
                [m if m is not None else torch.zeros(values.shape[1], dtype=torch.bool) for m in masks]
            )
            self.tables[named[name]] = (values, mask.to(adapter.device))

    def _batch_index(self, values: torch.Tensor, state: DecodeState, batch: int) -> tuple[torch.Tensor, bool]:
        rows = len(self.rows)
        if batch != rows * (2 if state.cfg else 1):
            raise PatchingError(f"Patching was built for {rows} rows but the decoder batch has {batch} rows.")
        if state.cfg and values.shape[0] % 2:
            raise PatchingError("The target runs with guidance but the sources were recorded without it.")
        n_sources = values.shape[0] // 2 if state.cfg else values.shape[0]
        if self.max_source >= n_sources:
            raise PatchingError(
                f"Source index {self.max_source} is outside the {n_sources} recorded sources."
            )
        if not state.cfg:
            return self.index, False
        return torch.cat([self.index, self.index + n_sources]), True

    def _make_fn(self, site: Site):
        values, mask = self.tables[site]

        def fn(h: torch.Tensor, state: DecodeState):
            start, stop = state.start, state.start + state.seq_len
            if stop > values.shape[1]:
                raise PatchingError(
                    f"Decoding position {stop - 1} is beyond the {values.shape[1]} recorded source positions; "
                    "generate the targets with as many steps as the sources."
                )
            index, cfg = self._batch_index(values, state, h.shape[0])
            window = mask[:, start:stop]  # (R, T)
            if cfg:
                window = torch.cat([window, window if self.half == "both" else torch.zeros_like(window)])
            patched = values[:, start:stop].index_select(0, index)  # (B', T, W)
            return torch.where(window[..., None], patched.to(h.dtype), h)

        return fn

    def hooked_sites(self):
        return list(self.tables)


def patch_grid(
    n_sources: int, site_sets: Sequence[Sequence[str]], windows: Sequence[StepWindow]
) -> list[PatchRow]:
    """Rows for every (source, site set, window), source-major: ``n_sources x len(site_sets) x len(windows)``."""
    return [
        PatchRow(s, tuple(sites), window)
        for s in range(n_sources)
        for sites in site_sets
        for window in windows
    ]


def normalised_effect(patched: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(patched − target) / (source − target)`` elementwise: 0 = the target unchanged, 1 = the source's value
    fully transferred (NaN where source and target are equal)."""
    patched, source, target = (np.asarray(x, dtype=float) for x in (patched, source, target))
    gap = source - target
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap != 0, (patched - target) / np.where(gap != 0, gap, 1.0), np.nan)
