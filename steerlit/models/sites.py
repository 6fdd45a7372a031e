"""The canonical map of intervention sites in a MusicGen decoder.

A layer site's name is ``<kind>.<layer>``, a head site's ``attn_head.<layer>.<head>``, keyed by true indices:

============== ==================================================================== ============================
kind           tensor                                                               hook point
============== ==================================================================== ============================
resid_post     output of decoder block ``i`` (the residual stream), (B, T, H)        output of ``layers[i]``
attn_out       self-attention output of block ``i``, before its residual add         output of ``layers[i].self_attn``
xattn_out      cross-attention (text) output of block ``i``, before its residual add output of ``layers[i].encoder_attn``
mlp_out        feed-forward output (``fc2``) of block ``i``, before its residual add  output of ``layers[i].fc2``
attn_head      self-attention head ``h`` of block ``i`` before the output projection input of ``layers[i].self_attn.out_proj``
               (B, T, head_dim): columns ``h*d .. (h+1)*d - 1`` of ``out_proj``'s input
============== ==================================================================== ============================

``out_proj``'s input (B, T, H) is the concatenation of the heads' outputs, so ``out_proj(cat(heads))`` is the
``attn_out`` site. Every other part of steerlit resolves names through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

SITE_KINDS: dict[str, str] = {  # the per-layer kinds (one site per layer)
    "resid_post": "output of decoder block i (residual stream), (B, T, H)",
    "attn_out": "self-attention output of block i before the residual add, (B, T, H)",
    "xattn_out": "cross-attention output of block i before the residual add, (B, T, H)",
    "mlp_out": "feed-forward (fc2) output of block i before the residual add, (B, T, H)",
}
HEAD_SITE_KINDS: dict[str, str] = {  # the per-head kinds (one site per layer and head)
    "attn_head": "self-attention head h of block i before the output projection, (B, T, head_dim)",
}
ALL_SITE_KINDS: dict[str, str] = {**SITE_KINDS, **HEAD_SITE_KINDS}
HookPoint = Literal["output", "input"]  # a module's forward output, or its first positional input
_SUBMODULE = {
    "resid_post": None,
    "attn_out": "self_attn",
    "xattn_out": "encoder_attn",
    "mlp_out": "fc2",
    "attn_head": "self_attn.out_proj",
}
_SITE_RE = re.compile(r"^([a-z_]+)\.(\d+)(?:\.(\d+))?$")


class UnknownSiteError(ValueError):
    """A site name that is malformed, of an unknown kind, or out of the model's layer or head range."""


@dataclass(frozen=True, order=True)
class Site:
    """One site: ``kind`` at ``layer`` (and ``head`` for the head kinds, else None)."""

    kind: str
    layer: int
    head: int | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.layer}" if self.head is None else f"{self.kind}.{self.layer}.{self.head}"

    @property
    def is_head(self) -> bool:
        return self.kind in HEAD_SITE_KINDS

    def __str__(self) -> str:
        return self.name


def list_sites(num_layers: int, kinds: tuple[str, ...] | None = None) -> list[str]:
    """All per-layer site names of a decoder with ``num_layers`` blocks, grouped by kind (head sites:
    :func:`list_head_sites`)."""
    kinds = kinds or tuple(SITE_KINDS)
    return [f"{k}.{i}" for k in kinds for i in range(num_layers)]


def list_head_sites(num_layers: int, num_heads: int, layers=None) -> list[str]:
    """``attn_head.{layer}.{head}`` for every head of ``layers`` (None: every layer), layer-major."""
    layers = range(num_layers) if layers is None else layers
    return [head_site(layer, h) for layer in layers for h in range(num_heads)]


def _valid_names_hint(num_layers: int) -> str:
    layer_kinds = ", ".join(f"{k}.0..{k}.{num_layers - 1}" for k in SITE_KINDS)
    return f"{layer_kinds}, attn_head.<layer>.<head> (layer 0..{num_layers - 1})"


def _split_name(name: str, num_layers: int) -> Site:
    match = _SITE_RE.match(str(name).strip())
    if match is None:
        raise UnknownSiteError(
            f"Malformed site name {name!r}: expected '<kind>.<layer>' such as 'resid_post.3' or "
            f"'attn_head.<layer>.<head>'. Valid sites: {_valid_names_hint(num_layers)}."
        )
    head = None if match.group(3) is None else int(match.group(3))
    return Site(match.group(1), int(match.group(2)), head)


def split_site(name: str | Site) -> Site:
    """The :class:`Site` a name spells (kind known, head given iff a head kind), without a range check."""
    if isinstance(name, Site):
        return name
    site = _split_name(name, 10**9)
    if site.kind not in ALL_SITE_KINDS or site.is_head != (site.head is not None):
        raise UnknownSiteError(f"{name!r} is not a site name such as 'resid_post.3' or 'attn_head.2.1'.")
    return site


def parse_site(name: str | Site, num_layers: int, num_heads: int | None = None) -> Site:
    """Parse and validate one site name against a decoder with ``num_layers`` blocks (and ``num_heads``
    attention heads, when given: head sites are then range-checked too)."""
    site = name if isinstance(name, Site) else _split_name(name, num_layers)
    if site.kind not in ALL_SITE_KINDS:
        raise UnknownSiteError(
            f"Unknown site kind {site.kind!r} in {site.name!r}. Valid kinds: {sorted(ALL_SITE_KINDS)}; "
            f"valid sites: {_valid_names_hint(num_layers)}."
        )
    if site.is_head != (site.head is not None):
        form = "'attn_head.<layer>.<head>'" if site.is_head else f"'{site.kind}.<layer>'"
        raise UnknownSiteError(f"Site {site.name!r} is malformed: write it as {form}.")
    if not 0 <= site.layer < num_layers:
        raise UnknownSiteError(
            f"Site {site.name!r} is out of range: this decoder has {num_layers} layers "
            f"(valid sites: {_valid_names_hint(num_layers)})."
        )
    if site.head is not None and num_heads is not None and not 0 <= site.head < num_heads:
        raise UnknownSiteError(
            f"Site {site.name!r} is out of range: this decoder has {num_heads} attention heads "
            f"(attn_head.{site.layer}.0..attn_head.{site.layer}.{num_heads - 1})."
        )
    return site


def parse_sites(names, num_layers: int, num_heads: int | None = None) -> list[Site]:
    """Validate a list of names; duplicates are an error (a site is recorded or steered once per call)."""
    sites = [parse_site(n, num_layers, num_heads) for n in names]
    if not sites:
        raise UnknownSiteError(f"No sites given. Valid sites: {_valid_names_hint(num_layers)}.")
    dupes = sorted({s.name for s in sites if sites.count(s) > 1})
    if dupes:
        raise UnknownSiteError(f"Duplicated sites {dupes}: name each site once.")
    return sites


def layer_site(kind: str, layer: int) -> str:
    """The name of site ``kind`` at ``layer`` (no validation)."""
    return f"{kind}.{layer}"


def head_site(layer: int, head: int) -> str:
    """The name of attention head ``head`` of block ``layer`` (no validation)."""
    return f"attn_head.{layer}.{head}"


def attention_shape(decoder_layers: nn.ModuleList) -> tuple[int, int]:
    """(heads, head_dim) of the decoder's self-attention."""
    attn = decoder_layers[0].self_attn
    return int(attn.num_heads), int(attn.head_dim)


def check_site(decoder_layers: nn.ModuleList, name: str | Site) -> Site:
    """:func:`parse_site` against this decoder's layers and heads."""
    return parse_site(name, len(decoder_layers), attention_shape(decoder_layers)[0])


def site_width(decoder_layers: nn.ModuleList, site: Site) -> int:
    """The last dimension of the site's tensor: head_dim for head sites, the hidden size H otherwise."""
    if site.is_head:
        return attention_shape(decoder_layers)[1]
    return int(decoder_layers[site.layer].self_attn.embed_dim)


def width_mismatch(decoder_layers: nn.ModuleList, site: Site, shape: tuple[int, ...]) -> str | None:
    """``None`` when a vector of ``shape`` fits the site (``(site_width,)``), else what the site has, e.g.
    ``"head_dim 64"`` or ``"hidden size 1024"``, for the caller's error message."""
    width = site_width(decoder_layers, site)
    if tuple(shape) == (width,):
        return None
    return f"{'head_dim' if site.is_head else 'hidden size'} {width}"


def head_columns(decoder_layers: nn.ModuleList, site: Site) -> slice:
    """The columns of ``out_proj``'s input (B, T, H) that hold a head site's tensor."""
    d = attention_shape(decoder_layers)[1]
    return slice(site.head * d, (site.head + 1) * d)


def site_hook_point(decoder_layers: nn.ModuleList, site: Site) -> tuple[nn.Module, HookPoint]:
    """The module to hook for a site and where: its forward ``output`` is the site's tensor (or a tuple whose
    first item is), or its first ``input`` holds it (head sites: :func:`head_columns` of ``out_proj``'s input)."""
    module = decoder_layers[site.layer]
    sub = _SUBMODULE[site.kind]
    for attr in () if sub is None else sub.split("."):
        module = getattr(module, attr)
    return module, "input" if site.is_head else "output"


def site_module(decoder_layers: nn.ModuleList, site: Site) -> nn.Module:
    """The module whose forward output *is* the site's tensor (head sites: the ``out_proj`` whose input holds
    it; see :func:`site_hook_point`)."""
    return site_hook_point(decoder_layers, site)[0]
