"""Steering grids: rows of (prompt, seed, steering terms) and their conversion to interventions.

A :class:`GridRow` is one generation. Its steering is a tuple of :class:`SteerTerm` (one per
concept); ``terms=()`` is the unsteered reference. α = 0 is never generated once per
(method, layer, strategy): the reference row of the same prompt and seed *is* the α = 0
counterpart of every steered row (α = 0 gives bit-identical codes, see NOTES), and
:func:`build_grid` maps a requested α = 0 to it.

Rows have a stable :attr:`GridRow.key` (sha1 of canonical JSON of all fields), the same in every process and
on every machine; records, file names and resume use the row's content key, which adds the exact vectors and
the generation settings (:mod:`steerlit.engines.keys`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from steerlit.intervene.injection import STRATEGIES, gram_schmidt, inject, top_heads
from steerlit.intervene.schedules import make_schedule
from steerlit.intervene.steer import CFG_HALVES, Intervention
from steerlit.models.sites import layer_site

# Steering columns of a flattened row (GridRow.flat), in display order.
STEER_COLUMNS = (
    "concept",
    "method",
    "layer",
    "alpha",
    "strategy",
    "operator",
    "schedule",
    "half",
    "site_kind",
)
KEY_LENGTH = 16  # hex characters of the sha1 kept in keys and file names


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: the same text for equal values in every process."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _schedule_text(schedule) -> str:
    return schedule if isinstance(schedule, str) else canonical_json(schedule)


@dataclass(frozen=True)
class SteerTerm:
    """One concept's steering in a row: the ``method`` direction of ``concept`` at source ``layer``.

    ``strategy``: ``one_to_all`` (the layer's vector at every layer), ``one_to_one`` (only at
    ``layer``) or ``top_heads``: the ``layer`` (read as k) attention heads with the most accurate probes, each
    steered along its own head direction (:func:`top_head_targets`; ``site_kind`` ``attn_head``).
    ``schedule``: a schedule name or a JSON-able dict (``{"kind": "exp_decay", ...}``).
    """

    concept: str
    method: str
    layer: int
    alpha: float
    strategy: str = "one_to_all"
    operator: str = "add"
    schedule: str | Mapping = "constant"
    half: str = "both"
    site_kind: str = "resid_post"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r} in a grid term; use one of {STRATEGIES}.")
        if self.half not in CFG_HALVES:
            raise ValueError(f"Unknown CFG half {self.half!r}; use one of {CFG_HALVES}.")
        make_schedule(self.schedule if isinstance(self.schedule, str) else dict(self.schedule))
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "alpha", float(self.alpha))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = self.schedule if isinstance(self.schedule, str) else dict(self.schedule)
        return d

    @property
    def source_site(self) -> str:
        return layer_site(self.site_kind, self.layer)

    def __hash__(self) -> int:  # a dict schedule is not hashable: hash the canonical text
        return hash(canonical_json(self.to_dict()))


@dataclass(frozen=True)
class GridRow:
    """One generation: prompt, sampling seed and steering terms (``()`` = unsteered reference)."""

    prompt: str
    seed: int
    terms: tuple[SteerTerm, ...] = field(default=())
    prompt_index: int = 0

    def __post_init__(self):
        object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "seed", int(self.seed))

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "prompt_index": self.prompt_index,
            "seed": self.seed,
            "terms": [t.to_dict() for t in self.terms],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> GridRow:
        return cls(
            prompt=d["prompt"],
            seed=d["seed"],
            terms=tuple(SteerTerm(**t) for t in d.get("terms", ())),
            prompt_index=d.get("prompt_index", 0),
        )

    @functools.cached_property
    def key(self) -> str:
        """Stable short hash of all fields (first 16 hex digits of sha1 of the canonical JSON); computed once
        per row (rows are immutable)."""
        return hashlib.sha1(canonical_json(self.to_dict()).encode()).hexdigest()[:KEY_LENGTH]

    @property
    def is_reference(self) -> bool:
        return not self.terms

    def __hash__(self) -> int:
        return hash(self.key)

    def flat(self) -> dict:
        """JSON-able columns. The reference has alpha 0 and empty steering columns; a multi-term row
        joins each column's values with ``+`` (e.g. concept ``tempo+timbre``, alpha ``1.0+0.5``)."""
        out = {"key": self.key, "prompt": self.prompt, "prompt_index": self.prompt_index, "seed": self.seed}
        out["n_terms"] = len(self.terms)
        cols = STEER_COLUMNS
        if not self.terms:
            out.update(dict.fromkeys(cols))
            out["alpha"] = 0.0
        elif len(self.terms) == 1:
            t = self.terms[0]
            out.update({c: getattr(t, c) for c in cols})
            out["schedule"] = _schedule_text(t.schedule)
        else:
            for c in cols:
                vals = [
                    _schedule_text(t.schedule) if c == "schedule" else str(getattr(t, c)) for t in self.terms
                ]
                out[c] = "+".join(vals)
        return out


def _as_list(x) -> list:
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


def build_grid(
    prompts: Sequence[str] | str,
    seeds: Sequence[int] | int,
    *,
    concepts: Sequence[str] | str,
    methods: Sequence[str] | str,
    layers: Sequence[int] | int,
    alphas: Sequence[float] | float,
    strategies: Sequence[str] | str = ("one_to_all",),
    operator: str = "add",
    schedule: str | Mapping = "constant",
    half: str = "both",
    site_kind: str = "resid_post",
    include_reference: bool = True,
) -> list[GridRow]:
    """The full single-concept grid: for every (prompt, seed) one reference row (if
    ``include_reference`` or 0 is among ``alphas``) and one row per
    (concept, method, layer, strategy, α ≠ 0). ``seeds`` may be a count (``range(n)``)."""
    prompts = _as_list(prompts)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    concepts, methods, layers = _as_list(concepts), _as_list(methods), [int(x) for x in _as_list(layers)]
    alphas, strategies = [float(a) for a in _as_list(alphas)], _as_list(strategies)
    if not prompts or not seeds:
        raise ValueError("build_grid needs at least one prompt and one seed.")
    steered_alphas = [a for a in alphas if a != 0.0]
    with_reference = include_reference or len(steered_alphas) < len(alphas)
    rows: list[GridRow] = []
    seen: set[str] = set()
    for pi, prompt in enumerate(prompts):
        for seed in seeds:
            candidates = [GridRow(prompt, seed, (), pi)] if with_reference else []
            for concept in concepts:
                for method in methods:
                    for layer in layers:
                        for strategy in strategies:
                            for alpha in steered_alphas:
                                term = SteerTerm(
                                    concept,
                                    method,
                                    layer,
                                    alpha,
                                    strategy,
                                    operator,
                                    schedule,
                                    half,
                                    site_kind,
                                )
                                candidates.append(GridRow(prompt, seed, (term,), pi))
            for row in candidates:
                if row.key not in seen:  # repeated values in the inputs give one row
                    seen.add(row.key)
                    rows.append(row)
    return rows


def reference_of(row: GridRow) -> GridRow:
    """The α = 0 counterpart of a row: the unsteered row with the same prompt and seed."""
    return GridRow(row.prompt, row.seed, (), row.prompt_index)


def _direction_set(directions, concept: str):
    if hasattr(directions, "for_method"):  # one DirectionSet for every concept
        return directions
    if concept not in directions:
        raise KeyError(f"No directions for concept {concept!r}; have {sorted(directions)}.")
    return directions[concept]


HEAD_ACCURACY_KEY = "head_accuracy"  # direction-file metadata: JSON {attn_head.L.h: probe accuracy}


def top_head_targets(direction_set, method: str, k: int) -> dict[str, torch.Tensor]:
    """The ``top_heads`` targets of a head-probe direction file: its ``method`` head directions at the ``k``
    heads with the highest accuracy in its ``head_accuracy`` metadata."""
    accuracy = getattr(direction_set, "metadata", {}).get(HEAD_ACCURACY_KEY)
    if accuracy is None:
        raise KeyError(
            "A top_heads term needs a head-probe direction file (directions.head_probes.save_head_directions) "
            f"with '{HEAD_ACCURACY_KEY}' metadata; this one has none."
        )
    return top_heads(direction_set.for_method(method), json.loads(accuracy), k)


def _term_targets(t: SteerTerm, directions, vec, num_layers: int) -> dict[str, torch.Tensor]:
    if t.strategy == "top_heads":
        return top_head_targets(_direction_set(directions, t.concept), t.method, t.layer)
    return inject(t.strategy, {t.source_site: vec}, [t.layer], num_layers, kind=t.site_kind)


def row_steering(
    row: GridRow, directions, num_layers: int, orthogonalize: bool = False
) -> list[Intervention]:
    """Interventions for a row. ``directions``: ``{concept: DirectionSet}`` (or one DirectionSet).

    With ``orthogonalize`` the terms' source vectors are Gram-Schmidt orthogonalised in term order
    (the first is unchanged) before the injection map spreads them over target layers; ``top_heads`` terms
    (several head directions each) are not orthogonalised."""
    sources = []
    for t in row.terms:
        if t.strategy == "top_heads":
            sources.append(None)
            continue
        vec = _direction_set(directions, t.concept).get(t.method, t.source_site)
        sources.append(torch.as_tensor(vec))
    layer_terms = [i for i, v in enumerate(sources) if v is not None]
    if orthogonalize and len(layer_terms) > 1:
        for i, v in zip(layer_terms, gram_schmidt([sources[i] for i in layer_terms])):
            sources[i] = v
    out = []
    for t, vec in zip(row.terms, sources):
        targets = _term_targets(t, directions, vec, num_layers)
        sched = t.schedule if isinstance(t.schedule, str) else dict(t.schedule)
        out.append(
            Intervention(
                vectors=targets,
                alpha=t.alpha,
                operator=t.operator,
                schedule=make_schedule(sched),
                half=t.half,
            )
        )
    return out
