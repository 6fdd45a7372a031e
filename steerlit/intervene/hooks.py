"""The one place where steerlit registers PyTorch hooks on a MusicGen.

:func:`hooked` installs, for the duration of a ``with`` block,
* a forward hook on the text encoder that notes the text batch size ``B`` (to tell a
  classifier-free-guidance decoder batch of ``2B`` from a plain one),
* a forward pre-hook on the decoder stack that notes which absolute decoding positions the
  current call covers (from the KV-cache length, so the discarded first prefill of ``generate``
  and the real prefill both start at position 0),
* one forward hook per requested site that hands the site tensor (B', T, H) to a callback and,
  if the callback returns a tensor, puts it in place of the module's output.

All hooks are removed when the block exits, also when it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from steerlit.models.sites import Site, site_module


@dataclass
class DecodeState:
    """What the decoder is doing in the current forward call.

    ``start``: absolute position of the first query token (= KV-cache length before the call);
    ``seq_len``: number of query positions T in this call; ``decoder_batch``: rows in the decoder
    batch (2B under guidance); ``text_batch``: B as seen by the text encoder (None if it did not run);
    ``calls``: decoder calls so far in this context.
    """

    start: int = 0
    seq_len: int = 0
    decoder_batch: int = 0
    text_batch: int | None = None
    calls: int = 0

    @property
    def cfg(self) -> bool:
        """True when the decoder batch holds a conditional and an unconditional half."""
        return self.text_batch is not None and self.decoder_batch == 2 * self.text_batch

    @property
    def is_prefill(self) -> bool:
        return self.start == 0


SiteFn = Callable[[torch.Tensor, DecodeState], "torch.Tensor | None"]


def output_tensor(output) -> torch.Tensor:
    """The site tensor inside a module output (plain tensor in transformers 5, tuple before)."""
    return output[0] if isinstance(output, tuple) else output


def replace_output(output, new: torch.Tensor):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _cache_length(kwargs: Mapping) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if isinstance(cache, tuple):  # legacy tuple caches: ((k, v, ...), ...) with k (B, heads, T, d)
        return int(cache[0][0].shape[-2]) if cache and cache[0] is not None else 0
    return int(cache.get_seq_length())


def _decoder_batch_and_len(args, kwargs, num_codebooks: int) -> tuple[int, int]:
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is not None:  # (B' * K, T)
        return input_ids.shape[0] // num_codebooks, input_ids.shape[-1]
    embeds = kwargs["inputs_embeds"]  # (B', T, H)
    return embeds.shape[0], embeds.shape[1]


@contextmanager
def hooked(model: nn.Module, site_fns: Mapping[Site, SiteFn]) -> Iterator[DecodeState]:
    """Install site callbacks on a ``MusicgenForConditionalGeneration`` (or its ``MusicgenForCausalLM``).

    Yields the shared :class:`DecodeState`, updated before every decoder call.
    """
    causal_lm = model.decoder if hasattr(model, "text_encoder") else model
    stack = causal_lm.model.decoder  # MusicgenDecoder
    num_codebooks = stack.num_codebooks
    state = DecodeState()
    handles = []

    def on_text(_module, _args, output):
        state.text_batch = output_tensor(
            output if not hasattr(output, "last_hidden_state") else output.last_hidden_state
        ).shape[0]

    def on_decoder(_module, args, kwargs):
        state.decoder_batch, state.seq_len = _decoder_batch_and_len(args, kwargs, num_codebooks)
        state.start = _cache_length(kwargs)
        state.calls += 1

    def make_site_hook(fn: SiteFn):
        def on_site(_module, _args, output):
            new = fn(output_tensor(output), state)
            return None if new is None else replace_output(output, new)

        return on_site

    try:
        if hasattr(model, "text_encoder"):
            handles.append(model.text_encoder.register_forward_hook(on_text))
        handles.append(stack.register_forward_pre_hook(on_decoder, with_kwargs=True))
        for site, fn in site_fns.items():
            handles.append(site_module(stack.layers, site).register_forward_hook(make_site_hook(fn)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


class SiteHookContext(AbstractContextManager):
    """Base of steerlit's context managers: subclasses give ``adapter``, ``hooked_sites`` and ``_make_fn``."""

    adapter = None
    _ctx = None

    def hooked_sites(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _make_fn(self, site: Site) -> SiteFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        self._ctx = hooked(self.adapter.model, {s: self._make_fn(s) for s in self.hooked_sites()})
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return bool(self._ctx.__exit__(*exc))
