"""Deterministic, label-stratified train/val/test splits of probe examples (twins kept together)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from steerlit.data.probe_set import ProbeExample

SPLIT_NAMES = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(f) for f in fractions)
    if (
        len(values) != 3
        or any(not (f >= 0 and math.isfinite(f)) for f in values)
        or abs(sum(values) - 1) > 1e-6
    ):
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions!r}"
        )
    return values


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` into counts proportional to ``fractions`` (largest-remainder method)."""
    raw = [round(n * f, 9) for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda k: (counts[k] - raw[k], k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts


def _group_key(ex: ProbeExample) -> str:
    return ex.id if ex.pair_index is None else f"{ex.id.split('/', 1)[0]}/pair/{ex.pair_index}"


def split_examples(
    examples: Iterable[ProbeExample], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[ProbeExample]]:
    """Deterministic, label-stratified ``train``/``val``/``test`` split.

    Examples with a ``pair_index`` are grouped with their twin (same id prefix before the
    first '/', same ``pair_index``) and always land in the same split. Groups are
    stratified by label composition, so each split keeps the class balance. The result
    depends only on the examples, ``fractions`` and ``seed`` -- not on input order; within
    a split, examples keep their input order.
    """
    fr = _check_fractions(fractions)
    items = list(examples)
    labels_by_group: dict[str, list[int]] = {}
    for ex in items:
        labels_by_group.setdefault(_group_key(ex), []).append(ex.label)
    strata: dict[tuple[int, ...], list[str]] = {}
    for key, labels in labels_by_group.items():
        strata.setdefault(tuple(sorted(labels)), []).append(key)

    assignment: dict[str, str] = {}
    for signature in sorted(strata):
        keys = sorted(strata[signature])
        random.Random(f"steerlit-split:{seed}:{signature}").shuffle(keys)
        counts = _allocate(len(keys), fr)
        for k, key in enumerate(keys):
            assignment[key] = SPLIT_NAMES[sum(k >= c for c in (counts[0], counts[0] + counts[1]))]

    out: dict[str, list[ProbeExample]] = {split: [] for split in SPLIT_NAMES}
    for ex in items:
        out[assignment[_group_key(ex)]].append(ex)
    return out
