"""The effective perturbation size of a steered group: ``‖α·v‖ / ‖h‖`` at the source layer, so that α compares
across layers and models.

``v`` is the group's direction at its source site (``<site_kind>.<layer>``) and ``‖h‖`` the mean L2 norm of the
activations the directions were fitted on at that site (``activation_norms`` in the direction file's metadata,
:func:`steerlit.directions.fit.activation_norms`). Per operator:

* ``add`` (h + α·v): the ratio is ``|α| · ‖v‖ / mean ‖h‖``;
* ``norm_add`` (h + α·‖h‖·v̂, renormalised): α is already relative to ‖h‖, the ratio is ``|α|``;
* ``ablate``: not an added vector; nan.

``one_to_all`` adds the source vector at every layer; its ratio is still measured against the source layer's
activations. Summary columns (:func:`perturbation_columns`): ``perturbation_per_alpha`` (the ratio at α = 1),
``perturbation_at_max`` / ``perturbation_at_min`` (at the group's ``alpha_max`` / ``alpha_min``); nan when the
direction file has no activation norms (files fitted before they were recorded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from steerlit.directions.io import DirectionSet
from steerlit.models.sites import layer_site
from steerlit.study.records import GridResult, GroupKey, SummaryRow

Directions = Mapping[str, DirectionSet]  # concept -> its directions


def ratio_per_alpha(directions: DirectionSet, method: str, site: str, operator: str) -> float:
    """``‖v‖ / mean ‖h‖`` (``add``), 1 (``norm_add``) or nan (``ablate``, or no recorded norm at ``site``)."""
    if operator == "norm_add":
        return 1.0
    norm = directions.activation_norms.get(site)
    if operator != "add" or not norm or (method, site) not in directions.vectors:
        return math.nan
    return float(directions.get(method, site).double().norm()) / norm


def group_sites(results: Sequence[GridResult]) -> dict[GroupKey, tuple[str, str]]:
    """``{group: (source site, operator)}`` of the single-term steered rows of a grid."""
    out: dict[GroupKey, tuple[str, str]] = {}
    for r in results:
        if r.is_single_term and r.group not in out:
            out[r.group] = (layer_site(r.site_kind or "resid_post", int(r.layer)), r.operator or "add")
    return out


def group_ratios(results: Sequence[GridResult], directions: Directions) -> dict[GroupKey, float]:
    """``{group: perturbation ratio per unit α}`` of the single-term steered rows of a grid."""
    return {
        group: ratio_per_alpha(directions[group[0]], group[1], site, operator)
        for group, (site, operator) in group_sites(results).items()
        if group[0] in directions
    }


def perturbation_columns(row: SummaryRow, per_alpha: float) -> dict[str, float]:
    """The summary columns of one group (module doc)."""
    return {
        "perturbation_per_alpha": per_alpha,
        "perturbation_at_max": abs(row.alpha_max) * per_alpha,
        "perturbation_at_min": abs(row.alpha_min) * per_alpha,
    }


def add_perturbation(
    summary: Sequence[SummaryRow], results: Sequence[GridResult], directions: Directions
) -> list[SummaryRow]:
    """Add :func:`perturbation_columns` to each summary row's ``stats`` (in place; returned)."""
    ratios = group_ratios(results, directions)
    for row in summary:
        row.stats.update(perturbation_columns(row, ratios.get(row.group, math.nan)))
    return list(summary)
