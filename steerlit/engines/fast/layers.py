"""One decoding step of a HF MusicGen decoder, written out over the model's own weights.

Shapes: B' decoder rows (2B under guidance: conditional rows first), K codebooks, V codebook
entries, H hidden size, ``nh`` heads of size ``d``, S text tokens, L = 1 + max_new_tokens positions.

The maths follows ``MusicgenDecoder.forward`` / ``MusicgenDecoderLayer.forward`` / ``MusicgenAttention``
exactly (transformers 5.x, eval mode): summed codebook embeddings + sinusoidal positions; per layer
LN → causal self-attention → residual, LN → cross-attention → residual, LN → fc1 → act → fc2 →
residual; final LN; one linear head per codebook. Two attention modes:

* ``exact`` (``kv_len = t + 1``, host-side step): the cache is read up to the current position and
  attention goes through transformers' own attention function for the model's implementation
  (eager or sdpa) with transformers' own cross-attention mask: the same kernels and arguments as HF.
* bucketed (``kv_len`` = end of a fixed bucket, step on device): the cache is read up to
  ``kv_len`` with a causal mask built from the device step counter (what CUDA graphs need);
  attention is ``F.scaled_dot_product_attention`` or, with ``deterministic``, plain matmuls.

Steering is applied at the same four sites as :mod:`steerlit.models.sites` through
:func:`steerlit.intervene.operators.apply_operator`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.musicgen.modeling_musicgen import eager_attention_forward

from steerlit.intervene.operators import apply_operator

SUPPORTED_ATTN = ("eager", "sdpa")


def _w(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return linear.weight, linear.bias


@dataclass
class LayerWeights:
    """References to one ``MusicgenDecoderLayer``'s parameters (``qkv``: optional fused copy (3H, H))."""

    module: nn.Module
    fuse: bool = False
    qkv: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        sa = self.module.self_attn
        if self.fuse and all(p.bias is None for p in (sa.q_proj, sa.k_proj, sa.v_proj)):
            self.qkv = torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]).detach()


class DecoderWeights:
    """The decoder of a ``MusicgenForConditionalGeneration``: embeddings, layers, final LN, heads.

    ``fuse=True`` builds the only copies: a fused q/k/v weight per layer and the K heads stacked
    into one (K·V, H) matrix (fast path); ``fuse=False`` keeps every op identical to HF.
    """

    def __init__(self, model: nn.Module, *, fuse: bool = False):
        causal = model.decoder
        stack = causal.model.decoder
        self.stack = stack
        self.config = stack.config
        self.num_codebooks = int(stack.num_codebooks)
        self.embed = [e.weight for e in stack.embed_tokens]
        self.layers = [LayerWeights(layer, fuse) for layer in stack.layers]
        self.final_ln = stack.layer_norm
        self.heads = [h.weight for h in causal.lm_heads]
        self.heads_fused = torch.cat(self.heads).detach() if fuse else None
        attn = stack.layers[0].self_attn
        self.num_heads, self.head_dim, self.scaling = attn.num_heads, attn.head_dim, attn.scaling
        self.hidden = int(stack.config.hidden_size)
        self.vocab = int(causal.lm_heads[0].out_features)
        self.attn_impl = stack.config._attn_implementation

    def position_table(self, length: int) -> torch.Tensor:
        """Sinusoidal positions (length, H), exactly what ``embed_positions`` returns (it grows if needed)."""
        dummy = torch.empty(1, 1, length, device=self.embed[0].device)
        return self.stack.embed_positions(dummy, 0)


@dataclass
class StepBuffers:
    """Per-call state. ``k_cache``/``v_cache``: per layer (B', nh, L, d) written at the step index;
    ``xk``/``xv``: cross-attention keys/values per layer (B', nh, S, d); ``xmask``: HF's encoder mask
    (exact mode) and ``xmask_add``: additive float mask (B', 1, 1, S) (bucketed mode);
    ``positions`` (L, H); ``steer``: ``{(kind, layer): [(operator, vec (B', H), coef (B', P)), ...]}``.
    ``text_len``: None (exact mode: text tensors are replaced per call) or a fixed S that texts are
    padded to (bucketed mode: tensors stay in place and are refilled, so graphs can be replayed)."""

    k_cache: list[torch.Tensor]
    v_cache: list[torch.Tensor]
    positions: torch.Tensor
    text_len: int | None = None
    xk: list[torch.Tensor] = field(default_factory=list)
    xv: list[torch.Tensor] = field(default_factory=list)
    xmask: torch.Tensor | None = None
    xmask_add: torch.Tensor | None = None
    steer: dict[tuple[str, int], list] = field(default_factory=dict)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B', T, H) -> (B', nh, T, d) as in ``MusicgenAttention``."""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def allocate_buffers(
    w: DecoderWeights, rows: int, length: int, text_len: int | None, device, dtype
) -> StepBuffers:
    """Zeroed self-attention caches (B', nh, L, d) per layer, positions, and (if ``text_len``) fixed
    cross-attention buffers (B', nh, text_len, d) with an all-masked additive mask."""
    shape = (rows, w.num_heads, length, w.head_dim)
    buf = StepBuffers(
        [torch.zeros(shape, device=device, dtype=dtype) for _ in w.layers],
        [torch.zeros(shape, device=device, dtype=dtype) for _ in w.layers],
        w.position_table(length),
        text_len,
    )
    if text_len is not None:
        xshape = (rows, w.num_heads, text_len, w.head_dim)
        buf.xk = [torch.zeros(xshape, device=device, dtype=dtype) for _ in w.layers]
        buf.xv = [torch.zeros(xshape, device=device, dtype=dtype) for _ in w.layers]
        buf.xmask_add = torch.full((rows, 1, 1, text_len), torch.finfo(dtype).min, device=device, dtype=dtype)
    return buf


def load_text(w: DecoderWeights, buf: StepBuffers, enc: torch.Tensor, enc_mask: torch.Tensor) -> None:
    """Compute cross-attention K/V once per call from ``enc`` (B', S, H), the encoder states as the
    decoder sees them (projected, masked, zeros for the unconditional half), and ``enc_mask`` (B', S)
    (0 for the unconditional half). Exact mode also builds HF's own encoder mask."""
    rows, S, dt = enc.shape[0], enc.shape[1], enc.dtype
    xk = [_heads(F.linear(enc, *_w(lw.module.encoder_attn.k_proj)), w.head_dim) for lw in w.layers]
    xv = [_heads(F.linear(enc, *_w(lw.module.encoder_attn.v_proj)), w.head_dim) for lw in w.layers]
    keep = enc_mask.bool()[:, None, None, :]
    add = torch.zeros(keep.shape, device=enc.device, dtype=dt).masked_fill(~keep, torch.finfo(dt).min)
    if buf.text_len is None:
        probe = torch.zeros(rows, 1, w.hidden, device=enc.device, dtype=dt)
        buf.xk, buf.xv, buf.xmask_add = xk, xv, add
        buf.xmask = create_bidirectional_mask(w.config, probe, enc_mask, enc)  # positional: stable in 5.x
        return
    if buf.text_len < S:
        raise ValueError(f"Text of {S} tokens does not fit the {buf.text_len}-token buffers.")
    for dst, src in zip(buf.xk + buf.xv, xk + xv):
        dst.zero_()
        dst[:, :, :S].copy_(src)
    buf.xmask_add.fill_(torch.finfo(dt).min)
    buf.xmask_add[..., :S].copy_(add)


def load_steering(buf: StepBuffers, steer: dict) -> None:
    """Take the steering tables (first call) or copy them into the same tensors (layout must match)."""
    if not buf.steer or buf.text_len is None:
        buf.steer = steer
        return
    for key, slots in buf.steer.items():
        for (_, vec, coef), (_, new_vec, new_coef) in zip(slots, steer[key]):
            vec.copy_(new_vec)
            coef.copy_(new_coef)


def _steer(buf: StepBuffers, kind: str, layer: int, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Apply every (operator, vec, coef) slot of a site to ``h`` (B', 1, H) at position ``pos`` (1,)."""
    for op, vec, coef in buf.steer.get((kind, layer), ()):
        h = apply_operator(op, h, vec, coef.index_select(1, pos))
    return h


def _hf_attention(module, q, k, v, mask, impl: str) -> torch.Tensor:
    """transformers' own attention function for ``impl`` -> (B', T, nh, d)."""
    if impl == "eager":
        fn = eager_attention_forward
    elif hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        fn = ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward)
    else:
        fn = ALL_ATTENTION_FUNCTIONS[impl]
    out, _ = fn(module, q, k, v, mask, dropout=0.0, scaling=module.scaling)
    return out


def _masked_attention(q, k, v, add_mask, scaling: float, deterministic: bool) -> torch.Tensor:
    """Attention with an additive float mask (B' or 1, 1, 1, S) -> (B', T, nh, d)."""
    if deterministic:
        scores = torch.matmul(q, k.transpose(2, 3)) * scaling + add_mask
        out = torch.matmul(F.softmax(scores, dim=-1), v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=add_mask, scale=scaling)
    return out.transpose(1, 2).contiguous()


@dataclass(frozen=True)
class StepMode:
    """How one step attends. ``exact``: ``kv_len = pos + 1`` (host value) and transformers' own attention;
    otherwise ``kv_len`` is a bucket end >= pos + 1 and ``causal`` (1, 1, 1, kv_len) masks the cache beyond
    ``pos``; ``deterministic``: plain matmul attention instead of SDPA (bucketed mode)."""

    exact: bool
    kv_len: int
    causal: torch.Tensor | None
    deterministic: bool


def embed_step(w: DecoderWeights, buf: StepBuffers, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Summed codebook embeddings of ``ids`` (B', K) plus the position ``pos`` (1,): (B', 1, H)."""
    h = F.embedding(ids[:, 0:1], w.embed[0])
    for k in range(1, w.num_codebooks):
        h = h + F.embedding(ids[:, k : k + 1], w.embed[k])
    return h + buf.positions.index_select(0, pos)


def causal_mask(kv_len: int, pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (1, 1, 1, kv_len): 0 up to the device position ``pos``, the dtype's minimum beyond."""
    keep = torch.arange(kv_len, device=pos.device) <= pos
    mask = torch.zeros(kv_len, device=pos.device, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
    return mask.view(1, 1, 1, kv_len)


def self_attention(w, buf, i: int, h, pos, mode: StepMode, ln_lin) -> torch.Tensor:
    """LN → q/k/v (fused when the weights are), cache write at ``pos``, attention, out_proj: (B', 1, H)."""
    lw, d = w.layers[i], w.head_dim
    sa, ln = lw.module.self_attn, lw.module.self_attn_layer_norm
    if lw.qkv is not None:
        q, k_new, v_new = ln_lin(h, ln.weight, ln.bias, ln.eps, lw.qkv).split(w.hidden, dim=-1)
    else:
        x = F.layer_norm(h, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        q, k_new, v_new = (F.linear(x, *_w(p)) for p in (sa.q_proj, sa.k_proj, sa.v_proj))
    buf.k_cache[i].index_copy_(2, pos, _heads(k_new, d))
    buf.v_cache[i].index_copy_(2, pos, _heads(v_new, d))
    kc, vc = buf.k_cache[i][:, :, : mode.kv_len], buf.v_cache[i][:, :, : mode.kv_len]
    if mode.exact:
        a = _hf_attention(sa, _heads(q, d), kc, vc, None, w.attn_impl)
    else:
        a = _masked_attention(_heads(q, d), kc, vc, mode.causal, w.scaling, mode.deterministic)
    return F.linear(a.reshape(*h.shape[:-1], -1).contiguous(), *_w(sa.out_proj))


def cross_attention(w, buf, i: int, h, mode: StepMode) -> torch.Tensor:
    """LN → q, attention over the text keys/values of the call, out_proj: (B', 1, H)."""
    lw = w.layers[i]
    xa, ln = lw.module.encoder_attn, lw.module.encoder_attn_layer_norm
    x = F.layer_norm(h, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    q = _heads(F.linear(x, *_w(xa.q_proj)), w.head_dim)
    if mode.exact:
        a = _hf_attention(xa, q, buf.xk[i], buf.xv[i], buf.xmask, w.attn_impl)
    else:
        a = _masked_attention(q, buf.xk[i], buf.xv[i], buf.xmask_add, w.scaling, mode.deterministic)
    return F.linear(a.reshape(*h.shape[:-1], -1).contiguous(), *_w(xa.out_proj))


def layer_step(w, buf, i: int, h, pos, mode: StepMode, fns: dict) -> torch.Tensor:
    """One ``MusicgenDecoderLayer`` on (B', 1, H), steered at its four sites."""
    m = w.layers[i].module
    h = h + _steer(buf, "attn_out", i, self_attention(w, buf, i, h, pos, mode, fns["ln_linear"]), pos)
    h = h + _steer(buf, "xattn_out", i, cross_attention(w, buf, i, h, mode), pos)
    ln = m.final_layer_norm
    if fns.get("mlp") is not None:
        f = fns["mlp"](h, ln.weight, ln.bias, ln.eps, m.fc1.weight, m.fc2.weight)
    else:
        f = mlp(h, ln.weight, ln.bias, ln.eps, m.fc1.weight, m.fc2.weight, m.activation_fn)
    h = h + _steer(buf, "mlp_out", i, f, pos)
    return _steer(buf, "resid_post", i, h, pos)


def decoder_step(
    w: DecoderWeights,
    buf: StepBuffers,
    ids: torch.Tensor,
    pos: torch.Tensor,
    kv_len: int,
    *,
    exact: bool = True,
    deterministic: bool = False,
    compiled: dict | None = None,
) -> torch.Tensor:
    """Logits (B'·K, V) in float32 for one decoding position.

    ``ids`` (B', K) decoder input ids (delay mask applied); ``pos`` (1,) int64 position on the
    model's device. ``exact``: ``kv_len`` must be ``pos + 1`` (host value); otherwise ``kv_len`` is a
    bucket end >= pos + 1 and the cache beyond ``pos`` is masked. ``compiled``: optional compiled
    versions of :func:`ln_linear` and :func:`mlp` (see :func:`compile_pieces`).
    """
    fns = {"ln_linear": ln_linear, "mlp": None, **(compiled or {})}
    h = embed_step(w, buf, ids, pos)
    mode = StepMode(exact, kv_len, None if exact else causal_mask(kv_len, pos, h.dtype), deterministic)
    for i in range(len(w.layers)):
        h = layer_step(w, buf, i, h, pos, mode, fns)
    h = w.final_ln(h)
    if w.heads_fused is not None:
        logits = F.linear(h, w.heads_fused).view(h.shape[0], w.num_codebooks, w.vocab)
    else:
        logits = torch.stack([F.linear(h, hw) for hw in w.heads], dim=1)[:, :, -1]
    return logits.reshape(-1, w.vocab).float()


def ln_linear(h, ln_w, ln_b, eps: float, weight) -> torch.Tensor:
    """LayerNorm then a bias-free linear: (B', T, H) -> (B', T, out)."""
    return F.linear(F.layer_norm(h, (h.shape[-1],), ln_w, ln_b, eps), weight)


def mlp(h, ln_w, ln_b, eps: float, fc1, fc2, act) -> torch.Tensor:
    """Final LayerNorm -> fc1 -> activation -> fc2 (the ``mlp_out`` site value), (B', T, H)."""
    x = F.layer_norm(h, (h.shape[-1],), ln_w, ln_b, eps)
    return F.linear(act(F.linear(x, fc1)), fc2)


@functools.cache
def compile_pieces(activation: str) -> dict:
    """``torch.compile``'d :func:`ln_linear` and :func:`mlp` (shapes do not depend on the step or
    bucket, so each compiles once per shape for all layers). The activation is resolved by name.
    Raises dynamo's recompile limit to 64 so that several batch sizes and model shapes in one process
    do not silently fall back to eager."""
    import torch._dynamo  # deferred: dynamo is heavy and only needed with compile=True

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            break

    act = ACT2FN[activation]

    def mlp_named(h, ln_w, ln_b, eps, fc1, fc2):
        return mlp(h, ln_w, ln_b, eps, fc1, fc2, act)

    return {
        "ln_linear": torch.compile(ln_linear, dynamic=False),
        "mlp": torch.compile(mlp_named, dynamic=False),
    }
