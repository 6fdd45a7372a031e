"""The canonical map of intervention sites in a MusicGen decoder.

A site name is ``<kind>.<layer>`` with the layer keyed by its true index:

============== ==================================================================== ==========
kind           tensor                                                               module
============== ==================================================================== ==========
resid_post     output of decoder block ``i`` (the residual stream), (B, T, H)        ``layers[i]``
attn_out       self-attention output of block ``i``, before its residual add         ``layers[i].self_attn``
xattn_out      cross-attention (text) output of block ``i``, before its residual add ``layers[i].encoder_attn``
mlp_out        feed-forward output (``fc2``) of block ``i``, before its residual add  ``layers[i].fc2``
============== ==================================================================== ==========

Every other part of steerlit resolves names through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

SITE_KINDS: dict[str, str] = {
    "resid_post": "output of decoder block i (residual stream), (B, T, H)",
    "attn_out": "self-attention output of block i before the residual add, (B, T, H)",
    "xattn_out": "cross-attention output of block i before the residual add, (B, T, H)",
    "mlp_out": "feed-forward (fc2) output of block i before the residual add, (B, T, H)",
}
_SUBMODULE = {"resid_post": None, "attn_out": "self_attn", "xattn_out": "encoder_attn", "mlp_out": "fc2"}
_SITE_RE = re.compile(r"^([a-z_]+)\.(\d+)$")


class UnknownSiteError(ValueError):
    """A site name that is malformed, of an unknown kind, or out of the model's layer range."""


@dataclass(frozen=True, order=True)
class Site:
    kind: str
    layer: int

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name


def list_sites(num_layers: int, kinds: tuple[str, ...] | None = None) -> list[str]:
    """All site names of a decoder with ``num_layers`` blocks, grouped by kind."""
    kinds = kinds or tuple(SITE_KINDS)
    return [f"{k}.{i}" for k in kinds for i in range(num_layers)]


def _valid_names_hint(num_layers: int) -> str:
    return ", ".join(f"{k}.0..{k}.{num_layers - 1}" for k in SITE_KINDS)


def parse_site(name: str | Site, num_layers: int) -> Site:
    """Parse and validate one site name against a decoder with ``num_layers`` blocks."""
    if isinstance(name, Site):
        site = name
    else:
        match = _SITE_RE.match(str(name).strip())
        if match is None:
            raise UnknownSiteError(
                f"Malformed site name {name!r}: expected '<kind>.<layer>' such as 'resid_post.3'. "
                f"Valid sites: {_valid_names_hint(num_layers)}."
            )
        site = Site(match.group(1), int(match.group(2)))
    if site.kind not in SITE_KINDS:
        raise UnknownSiteError(
            f"Unknown site kind {site.kind!r} in {site.name!r}. Valid kinds: {sorted(SITE_KINDS)}; "
            f"valid sites: {_valid_names_hint(num_layers)}."
        )
    if not 0 <= site.layer < num_layers:
        raise UnknownSiteError(
            f"Site {site.name!r} is out of range: this decoder has {num_layers} layers "
            f"(valid sites: {_valid_names_hint(num_layers)})."
        )
    return site


def parse_sites(names, num_layers: int) -> list[Site]:
    """Validate a list of names; duplicates are an error (a site is recorded or steered once per call)."""
    sites = [parse_site(n, num_layers) for n in names]
    if not sites:
        raise UnknownSiteError(f"No sites given. Valid sites: {_valid_names_hint(num_layers)}.")
    dupes = sorted({s.name for s in sites if sites.count(s) > 1})
    if dupes:
        raise UnknownSiteError(f"Duplicated sites {dupes}: name each site once.")
    return sites


def layer_site(kind: str, layer: int) -> str:
    """The name of site ``kind`` at ``layer`` (no validation)."""
    return f"{kind}.{layer}"


def site_module(decoder_layers: nn.ModuleList, site: Site) -> nn.Module:
    """The module whose forward output *is* the site's tensor (or a tuple whose first item is)."""
    block = decoder_layers[site.layer]
    sub = _SUBMODULE[site.kind]
    return block if sub is None else getattr(block, sub)
