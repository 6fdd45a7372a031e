"""Injection maps: which direction goes to which target site.

Directions are keyed by their *source* site (``resid_post.12``). A map turns them into
``{target_site: vector}``:

* ``one_to_one``: each chosen layer receives its own layer's direction;
* ``one_to_all``: one source direction is added at every layer (or at chosen target layers);
* ``top_heads``: the ``k`` attention heads whose probes are most accurate, each with its own head direction
  (SMITIN); :func:`top_heads` resolves it from head directions and accuracies (``inject`` has neither);
* explicit: ``{source_site: [target_site, ...]}``.
Also Gram-Schmidt orthogonalisation for steering several concepts at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch

from steerlit.models.sites import layer_site, split_site

Strategy = Literal["one_to_one", "one_to_all", "top_heads"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
# The strategies one source vector suffices for (top_heads needs per-head directions and probe accuracies).
LAYER_STRATEGIES: tuple[Strategy, ...] = tuple(s for s in STRATEGIES if s != "top_heads")


def _get(directions: Mapping[str, torch.Tensor], site: str) -> torch.Tensor:
    if site not in directions:
        raise ValueError(f"No direction for site {site!r}; available: {sorted(directions)[:8]}...")
    return directions[site]


def one_to_one(directions: Mapping[str, torch.Tensor], layers: Sequence[int], kind: str = "resid_post"):
    """``{kind.L: directions[kind.L]}`` for each L in ``layers``."""
    return {layer_site(kind, L): _get(directions, layer_site(kind, L)) for L in layers}


def one_to_all(
    vector: torch.Tensor, num_layers: int, kind: str = "resid_post", targets: Sequence[int] | None = None
):
    """The same vector at every layer (or at ``targets``)."""
    layers = range(num_layers) if targets is None else targets
    return {layer_site(kind, L): vector for L in layers}


def best_heads(accuracy: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` head sites of ``accuracy`` ({attn_head.L.h: accuracy}) with the highest accuracy (ties: lower
    layer, then lower head), best first."""
    if k < 1:
        raise ValueError(f"top_heads needs k >= 1 heads, got {k}.")
    heads = [s for s in accuracy if split_site(s).is_head]
    if len(heads) < k:
        raise ValueError(f"top_heads asks for {k} heads but only {len(heads)} head accuracies are known.")
    return sorted(heads, key=lambda s: (-float(accuracy[s]), split_site(s)))[:k]


def top_heads(
    directions: Mapping[str, torch.Tensor], accuracy: Mapping[str, float], k: int
) -> dict[str, torch.Tensor]:
    """``{attn_head.L.h: directions[site]}`` for the :func:`best_heads` of ``accuracy``; every chosen head
    needs a direction ((head_dim,) each)."""
    return {site: _get(directions, site) for site in best_heads(accuracy, k)}


def explicit_map(directions: Mapping[str, torch.Tensor], mapping: Mapping[str, Sequence[str]]):
    """``{source: [targets]}`` → ``{target: directions[source]}``; a target named twice is an error."""
    out: dict[str, torch.Tensor] = {}
    for source, targets in mapping.items():
        for target in targets:
            if target in out:
                raise ValueError(
                    f"Target site {target!r} receives two sources in the injection map; name it once."
                )
            out[target] = _get(directions, source)
    return out


def inject(
    strategy: str | Mapping,
    directions: Mapping[str, torch.Tensor],
    layers: Sequence[int],
    num_layers: int,
    kind: str = "resid_post",
) -> dict[str, torch.Tensor]:
    """Resolve an injection strategy for source ``layers``.

    ``one_to_one``: each of ``layers`` gets its own direction. ``one_to_all``: ``layers`` must hold
    one source layer, whose direction goes to every layer. A mapping is an explicit map.
    """
    if isinstance(strategy, Mapping):
        return explicit_map(directions, strategy)
    if strategy == "one_to_one":
        return one_to_one(directions, layers, kind)
    if strategy == "top_heads":
        raise ValueError(
            "top_heads needs per-head directions and probe accuracies: resolve it with injection.top_heads "
            "(grid rows do so from a head-probe direction file)."
        )
    if strategy == "one_to_all":
        if len(layers) != 1:
            raise ValueError(f"one_to_all takes one source layer, got {list(layers)}.")
        return one_to_all(_get(directions, layer_site(kind, layers[0])), num_layers, kind)
    raise ValueError(
        f"Unknown injection strategy {strategy!r}; use one of {STRATEGIES} or a source->targets map."
    )


def gram_schmidt(vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Orthogonalise each vector against the ones before it (the first is unchanged)."""
    out: list[torch.Tensor] = []
    for v in vectors:
        w = v.clone().double()
        for u in out:
            u64 = u.double()
            w = w - (w @ u64) / (u64 @ u64).clamp_min(1e-30) * u64
        out.append(w.to(v.dtype))
    return out
