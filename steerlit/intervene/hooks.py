"""The one place where steerlit registers PyTorch hooks on a MusicGen.

:func:`hooked` installs, for the duration of a ``with`` block,
* a forward hook on the text encoder that notes the text batch size ``B`` (to tell a
  classifier-free-guidance decoder batch of ``2B`` from a plain one),
* a forward pre-hook on the decoder stack that notes which absolute decoding positions the
  current call covers (from the KV-cache length, so the discarded first prefill of ``generate``
  and the real prefill both start at position 0),
* one forward hook per requested layer site that hands the site tensor (B', T, H) to a callback and,
  if the callback returns a tensor, puts it in place of the module's output;
* one forward pre-hook per attention output projection with requested head sites: its input (B', T, H) is the
  concatenation of the heads, and each head site's callback gets its columns (B', T, head_dim) and may return
  new ones (the projection then sees the input with those columns replaced).

All hooks are removed when the block exits, also when it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from steerlit.models.sites import Site, check_site, head_columns, site_hook_point


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


def _make_site_hook(fn: SiteFn, state: DecodeState):
    def on_site(_module, _args, output):
        new = fn(output_tensor(output), state)
        return None if new is None else replace_output(output, new)

    return on_site


def _make_heads_hook(fns: list[tuple[slice, SiteFn]], state: DecodeState):
    """A pre-hook on ``out_proj``: each head's columns of the input (B', T, H) go to its callback."""

    def on_heads(_module, args):
        x = args[0]
        patched = None
        for columns, fn in fns:
            new = fn(x[..., columns], state)
            if new is not None:
                if patched is None:
                    patched = x.clone()
                patched[..., columns] = new
        return None if patched is None else (patched, *args[1:])

    return on_heads


def _site_hooks(layers: nn.ModuleList, site_fns: Mapping[Site, SiteFn], state: DecodeState) -> list:
    """Register the site hooks (head sites grouped by projection, in head order); return the handles."""
    handles, heads = [], {}
    try:
        for site, fn in site_fns.items():
            site = check_site(layers, site)
            module, point = site_hook_point(layers, site)
            if point == "input":
                heads.setdefault(module, []).append((site.head, head_columns(layers, site), fn))
            else:
                handles.append(module.register_forward_hook(_make_site_hook(fn, state)))
        for module, entries in heads.items():
            fns = [(cols, fn) for _, cols, fn in sorted(entries, key=lambda e: e[0])]
            handles.append(module.register_forward_pre_hook(_make_heads_hook(fns, state)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles


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

    try:
        if hasattr(model, "text_encoder"):
            handles.append(model.text_encoder.register_forward_hook(on_text))
        handles.append(stack.register_forward_pre_hook(on_decoder, with_kwargs=True))
        handles.extend(_site_hooks(stack.layers, site_fns, state))
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
