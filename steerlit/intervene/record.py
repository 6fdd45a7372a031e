"""Recording site activations during ``generate`` or a teacher-forced forward pass.

Step alignment: ``generate`` calls the decoder ``max_new_tokens + 1`` times; the first call is a
prefill whose outputs are thrown away. Every call that starts at position 0 is a prefill, so the
recorder restarts there and what it holds at the end belongs to the real run. Position ``p`` of
the recording is the hidden state whose logits choose the tokens at position ``p + 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

import torch

from steerlit.intervene.hooks import DecodeState, SiteHookContext
from steerlit.intervene.steer import CFG_HALVES, CfgHalf
from steerlit.models.sites import Site

Reduction = Literal["first", "mean", "last", "all"]
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)
PooledReduction = Literal["first", "mean", "last"]  # the reductions a cache stores (one vector per example)


def select_half(hidden: torch.Tensor, state: DecodeState, half: str) -> torch.Tensor:
    """Rows of ``hidden`` (B', T, H) for a CFG half: rows [:B] conditional, [B:] unconditional."""
    if not state.cfg or half == "both":
        if half == "uncond" and not state.cfg:
            raise ValueError(
                "half='uncond' was asked for, but this call has no classifier-free-guidance batch."
            )
        return hidden
    b = state.text_batch
    return hidden[:b] if half == "cond" else hidden[b:]


class _SiteBuffer:
    """Accumulates one site's reduction on the CPU as calls arrive."""

    def __init__(self, reduction: str, dtype: torch.dtype):
        self.reduction, self.dtype = reduction, dtype
        self.reset()

    def reset(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.total: torch.Tensor | None = None
        self.count = 0
        self.first: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def add(self, h: torch.Tensor, prefill: bool) -> None:  # h (B, T, H) on the model's device
        h = h.detach()
        if prefill:
            self.reset()
            self.first = h[:, -1].to("cpu", torch.float32)  # step before any audio token is chosen
        self.last = h[:, -1].to("cpu", torch.float32)
        if self.reduction == "all":
            self.chunks.append(h.to("cpu", self.dtype))
        elif self.reduction == "mean":
            # Mean over decoding steps: from the prefill's last position (first new token) on.
            steps = h[:, -1:] if prefill else h
            part = steps.to("cpu", torch.float64).sum(dim=1)
            self.total = part if self.total is None else self.total + part
            self.count += steps.shape[1]

    def result(self) -> torch.Tensor:
        if self.first is None:
            raise RuntimeError("Nothing was recorded: the model was not run inside the recording context.")
        if self.reduction == "all":
            return torch.cat(self.chunks, dim=1)  # (B, T, H)
        if self.reduction == "mean":
            return (self.total / self.count).to(self.dtype)  # (B, H)
        return (self.first if self.reduction == "first" else self.last).to(self.dtype)  # (B, H)


class ActivationRecorder(SiteHookContext):
    """Record sites of a MusicGen while it runs.

    >>> with ActivationRecorder(adapter, ["resid_post.2"], reduction="mean") as rec:
    ...     adapter.model.generate(**inputs, max_new_tokens=50)
    >>> rec.results["resid_post.2"].shape  # (B, H)

    ``reduction``: ``first`` (B, H) hidden state before any audio is produced; ``mean`` (B, H) over
    decoding steps; ``last`` (B, H); ``all`` (B, T, H) every position. Head sites (``attn_head.L.h``) record
    (B, head_dim) or (B, T, head_dim). ``half``: which CFG half to
    keep (``cond`` by default; ignored when there is no guidance batch unless ``uncond``).
    ``dtype``: storage dtype on the CPU (``torch.float16`` halves memory).
    """

    def __init__(
        self,
        adapter,
        sites: Iterable[str | Site],
        *,
        reduction: str = "mean",
        half: CfgHalf = "cond",
        dtype: torch.dtype = torch.float32,
    ):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {reduction!r}; use one of {REDUCTIONS}.")
        if half not in CFG_HALVES:
            raise ValueError(f"Unknown CFG half {half!r}; use one of {CFG_HALVES}.")
        self.adapter = adapter
        self.sites = adapter.parse_sites(list(sites))
        self.reduction, self.half = reduction, half
        self.buffers = {s: _SiteBuffer(reduction, dtype) for s in self.sites}

    def _make_fn(self, site: Site):
        def fn(hidden: torch.Tensor, state: DecodeState):
            self.buffers[site].add(select_half(hidden, state, self.half), prefill=state.is_prefill)
            return None

        return fn

    def hooked_sites(self):
        return list(self.sites)

    @property
    def results(self) -> dict[str, torch.Tensor]:
        return {s.name: buf.result() for s, buf in self.buffers.items()}
