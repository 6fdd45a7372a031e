"""Contrastive probe sets: YAML loading, validation and deterministic splits.

A probe set holds prompts for the two poles of one concept (tempo: fast vs slow; timbre: bright vs dark),
optionally as matched pairs. The per-pole activation means of these prompts give a steering direction.
File schema: see ``probes/README.md``.

Every validation failure raises :class:`ProbeSetError` with one message that names
the file, the problem and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from steerlit.resources import resource_dir

ENV_PROBES_DIR = "STEERLIT_PROBES_DIR"
PROBE_SET_KEYS = ("name", "description", "poles", "prompts", "pairs")
EVAL_SET_KEYS = ("name", "description", "kind", "prompts")
ExampleForm = Literal["poles", "pairs"]
PathLike = str | os.PathLike[str]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_CMP = "compared ignoring case and whitespace"


class ProbeSetError(ValueError):
    """A probe-set or eval-prompt file (or in-memory probe set) is unusable."""


def normalize_prompt(text: str) -> str:  # the key of duplicate detection: case- and whitespace-insensitive
    return " ".join(text.split()).casefold()


def _fail(where: str, problem: str, fix: str) -> ProbeSetError:
    return ProbeSetError(f"{where}: {problem}. Fix: {fix}.")


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


@dataclass(frozen=True)
class ProbeExample:
    """One labelled prompt. ``label`` is 1 for the positive pole, 0 for the negative."""

    id: str
    text: str
    label: int
    pole: str
    pair_index: int | None = None


@dataclass
class ProbeSet:
    """Prompts for the two poles of one concept; validated on construction."""

    name: str
    description: str
    positive: str
    negative: str
    positive_prompts: list[str]
    negative_prompts: list[str]
    pairs: list[tuple[str, str]] = field(default_factory=list)
    source: Path | None = None

    def __post_init__(self) -> None:
        self.positive_prompts = list(self.positive_prompts)
        self.negative_prompts = list(self.negative_prompts)
        self.pairs = [tuple(p) for p in self.pairs]  # type: ignore[misc]
        _validate_probe_set(self)

    @property
    def where(self) -> str:
        """How error messages refer to this probe set."""
        return f"probe set file {str(self.source)!r}" if self.source else f"probe set {self.name!r}"

    def examples(self, form: ExampleForm = "poles") -> list[ProbeExample]:
        """Labelled examples, positives first.

        ``form="poles"``: one example per pole prompt, ids like ``tempo/fast/007``.
        ``form="pairs"``: two examples per pair (positive twin, then negative twin),
        ids like ``tempo/pair/012/fast``, both with ``pair_index=12``.
        """
        out: list[ProbeExample] = []
        if form == "poles":
            for label, pole, prompts in (
                (1, self.positive, self.positive_prompts),
                (0, self.negative, self.negative_prompts),
            ):
                width = max(3, len(str(len(prompts) - 1)))
                out += [
                    ProbeExample(f"{self.name}/{pole}/{i:0{width}d}", t, label, pole)
                    for i, t in enumerate(prompts)
                ]
            return out
        if form != "pairs":
            raise ValueError(f"form must be 'poles' or 'pairs', got {form!r}")
        if not self.pairs:
            raise _fail(
                self.where,
                "has no 'pairs', so form='pairs' is unavailable",
                "add a 'pairs:' list or use form='poles'",
            )
        width = max(3, len(str(len(self.pairs) - 1)))
        for i, (pos_text, neg_text) in enumerate(self.pairs):
            stem = f"{self.name}/pair/{i:0{width}d}"
            out.append(ProbeExample(f"{stem}/{self.positive}", pos_text, 1, self.positive, i))
            out.append(ProbeExample(f"{stem}/{self.negative}", neg_text, 0, self.negative, i))
        return out


# --------------------------------------------------------------------------- validation


def _check_text(where: str, what: str, value: Any) -> str:
    if not isinstance(value, str):
        problem = f"{what} is {_kind(value)} ({value!r}), not a string"
        raise _fail(where, problem, "write every prompt as a quoted string")
    if not value.strip():
        raise _fail(where, f"{what} is an empty string", "remove it or write the prompt text")
    return value


def _check_name(where: str, what: str, value: Any) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        fix = "use only letters, digits, '_', '-', '.' or '+' (it becomes part of example ids)"
        raise _fail(where, f"{what} {value!r} is not a simple name", fix)
    return value


def _check_prompts(where: str, group: str, prompts: Sequence[Any], seen: dict[str, tuple[str, int]]) -> None:
    """Type-check ``prompts`` and record them in ``seen``; raise on any duplicate."""
    for i, text in enumerate(prompts):
        key = normalize_prompt(_check_text(where, f"prompt {i} of {group}", text))
        if key in seen:
            other, j = seen[key]
            if other == group:
                problem = f"duplicate prompt {_short(text)} in {group} (items {j} and {i}; {_CMP})"
                raise _fail(where, problem, "remove or reword one of them")
            problem = f"prompt {_short(text)} is in both {other} (item {j}) and {group} (item {i}; {_CMP})"
            raise _fail(
                where, problem, "a prompt must belong to exactly one pole; remove it from one of them"
            )
        seen[key] = (group, i)


def _validate_probe_set(ps: ProbeSet) -> None:
    where = ps.where
    _check_name(where, "name", ps.name)
    if not isinstance(ps.description, str):
        raise _fail(where, f"description is {_kind(ps.description)}", "make it a string")
    _check_name(where, "positive pole label", ps.positive)
    _check_name(where, "negative pole label", ps.negative)
    if ps.positive == ps.negative:
        raise _fail(where, f"both poles are named {ps.positive!r}", "give the two poles different labels")

    seen: dict[str, tuple[str, int]] = {}
    for pole, prompts in ((ps.positive, ps.positive_prompts), (ps.negative, ps.negative_prompts)):
        if not prompts:
            raise _fail(where, f"pole {pole!r} has no prompts", f"add prompts under 'prompts: {pole}:'")
        _check_prompts(where, f"pole {pole!r}", prompts, seen)

    _validate_pairs(ps, seen)


def _validate_pairs(ps: ProbeSet, seen: Mapping[str, tuple[str, int]]) -> None:
    """Pairs are the matched-pairs form of the pole lists: pair ``i`` is (``positive_prompts[i]``,
    ``negative_prompts[i]``), so there is one pair per pole prompt and no text is in two pairs."""
    where = ps.where
    twins: dict[str, int] = {}  # text -> the pair it is a twin of (a repeated pair reuses both)
    for i, pair in enumerate(ps.pairs):
        if len(pair) != 2:
            raise _fail(
                where, f"pair {i} has {len(pair)} texts", "give each pair one positive and one negative text"
            )
        keys = tuple(normalize_prompt(_check_text(where, f"pair {i} text", t)) for t in pair)
        if keys[0] == keys[1]:
            raise _fail(
                where, f"pair {i} has the same text twice: {_short(pair[0])}", "make the twins differ"
            )
        for text, key, pole, other in (
            (pair[0], keys[0], ps.positive, ps.negative),
            (pair[1], keys[1], ps.negative, ps.positive),
        ):
            if key in seen and seen[key][0] == f"pole {other!r}":
                problem = f"pair {i} uses {_short(text)} as {pole!r} but it is a {other!r} pole prompt"
                raise _fail(where, problem, "swap the pair's texts or fix the pole lists")
            if key in twins:
                problem = f"pair {i} reuses {_short(text)}, already a twin in pair {twins[key]} ({_CMP})"
                raise _fail(where, problem, "give every pair its own two texts: a prompt belongs to one pair")
            twins[key] = i
    if not ps.pairs:
        return
    counts = (len(ps.pairs), len(ps.positive_prompts), len(ps.negative_prompts))
    if len(set(counts)) != 1:
        problem = (
            f"has {counts[0]} pairs but {counts[1]} {ps.positive!r} and {counts[2]} {ps.negative!r} prompts; pairs "
            "are the matched-pairs form of the pole lists (pair i = prompt i of each pole)"
        )
        raise _fail(
            where, problem, "give exactly one pair per pole prompt, in the same order, or remove 'pairs:'"
        )
    for i, pair in enumerate(ps.pairs):
        expected = (ps.positive_prompts[i], ps.negative_prompts[i])
        if tuple(normalize_prompt(t) for t in pair) != tuple(normalize_prompt(t) for t in expected):
            problem = (
                f"pair {i} is ({_short(pair[0], 50)}, {_short(pair[1], 50)}) but prompt {i} of the poles is "
                f"({_short(expected[0], 50)}, {_short(expected[1], 50)}); pair i must repeat prompt i of each pole"
            )
            raise _fail(where, problem, "list the pairs in the order of the pole prompts, or remove 'pairs:'")


def check_unique_names(probe_sets: Iterable[ProbeSet]) -> None:
    """Raise :class:`ProbeSetError` if two probe sets share a ``name`` (their results would go to one folder
    and one of the concepts would be lost)."""
    first: dict[str, ProbeSet] = {}
    for ps in probe_sets:
        if ps.name in first:
            other = first[ps.name]
            problem = f"{ps.where} and {other.where} are both named {ps.name!r}"
            raise _fail(
                "probe sets", problem, "give each probe set its own 'name:' (it names the concept's folder)"
            )
        first[ps.name] = ps


def validate_against_eval(
    probe_set: ProbeSet, eval_prompts: Iterable[str], eval_name: str = "evaluation set"
) -> None:
    """Raise :class:`ProbeSetError` if an eval prompt also appears in the probe set's poles or pairs."""
    if isinstance(eval_prompts, str):
        raise TypeError("eval_prompts must be a list of prompts, not a single string")
    eval_keys = {normalize_prompt(t) for t in eval_prompts if isinstance(t, str)}
    sources = [(f"pole {probe_set.positive!r}", t) for t in probe_set.positive_prompts]
    sources += [(f"pole {probe_set.negative!r}", t) for t in probe_set.negative_prompts]
    sources += [(f"pair {i}", t) for i, pair in enumerate(probe_set.pairs) for t in pair]
    for origin, text in sources:
        if normalize_prompt(text) in eval_keys:
            problem = f"prompt {_short(text)} ({origin}) also appears in the {eval_name} ({_CMP})"
            raise _fail(
                probe_set.where,
                problem,
                "eval prompts must be held out; remove or reword it in one of the files",
            )


# --------------------------------------------------------------------------- files


def default_probes_dir() -> Path:
    """``$STEERLIT_PROBES_DIR`` if set, else ``probes/`` on the resource search path
    (:func:`steerlit.resources.resource_dir`: ``$STEERLIT_HOME``, the checkout, the installed package data)."""
    env = os.environ.get(ENV_PROBES_DIR)
    return Path(env).expanduser() if env else resource_dir("probes")


def available_probe_sets(probes_dir: PathLike | None = None) -> list[str]:
    """Short names (file stems) of the YAML files in the probes directory."""
    base = Path(probes_dir) if probes_dir is not None else default_probes_dir()
    if not base.is_dir():
        return []
    return sorted({p.stem for p in base.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()})


def resolve_probe_path(path_or_name: PathLike, probes_dir: PathLike | None = None) -> Path:
    """Resolve a file path or a short name (e.g. ``"tempo"``) to an existing YAML file.

    Names are looked up in ``probes_dir``, else ``$STEERLIT_PROBES_DIR``, else the repo's
    ``probes/``. Anything with a path separator or a ``.yaml``/``.yml`` suffix is a path
    (a bare ``tempo.yaml`` that is not in the working directory is also tried there).
    """
    base = Path(probes_dir) if probes_dir is not None else default_probes_dir()
    raw = os.fspath(path_or_name)
    if (
        isinstance(path_or_name, os.PathLike)
        or "/" in raw
        or os.sep in raw
        or raw.endswith((".yaml", ".yml"))
    ):
        path = Path(raw).expanduser()
        candidates = [path] + ([base / path] if not path.is_absolute() and len(path.parts) == 1 else [])
    else:
        candidates = [base / f"{raw}.yaml", base / f"{raw}.yml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = ", ".join(available_probe_sets(base)) or "(none)"
    problem = f"not found (looked for {', '.join(map(str, candidates))}); available names in {base}: {names}"
    fix = f"pass an existing YAML path or one of the available names (probes_dir= or ${ENV_PROBES_DIR} picks the directory)"
    raise _fail(f"probe file {raw!r}", problem, fix)


def _read_mapping(path: Path, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problem = f"is not valid YAML ({' '.join(str(exc).split())})"
        raise _fail(where, problem, "fix the YAML syntax at the reported line") from exc
    if not isinstance(data, Mapping):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise _fail(
            where, f"top level is {got}, not a mapping", f"write a mapping with the keys {', '.join(allowed)}"
        )
    return dict(data)


def _check_keys(where: str, data: Mapping[Any, Any], allowed: Sequence[str]) -> None:
    unknown = [repr(k) for k in data if k not in allowed]
    if unknown:
        raise _fail(
            where, f"unknown key(s) {', '.join(unknown)}", f"use only the allowed keys {', '.join(allowed)}"
        )


def _parse_probe_mapping(data: dict[str, Any], path: Path) -> ProbeSet:
    where = f"probe set file {str(path)!r}"
    if data.get("kind") == "eval" or ("poles" not in data and isinstance(data.get("prompts"), list)):
        fix = "load it with load_eval_prompts(), or add 'poles:' and per-pole 'prompts:' to make a probe set"
        raise _fail(where, "is an eval prompt list (flat 'prompts', no 'poles'), not a probe set", fix)
    _check_keys(where, data, PROBE_SET_KEYS)

    poles = data.get("poles")
    if not isinstance(poles, Mapping) or set(poles) != {"positive", "negative"}:
        got = "missing" if poles is None else repr(poles)
        fix = "add 'poles: {positive: <label>, negative: <label>}' (e.g. {positive: fast, negative: slow})"
        raise _fail(where, f"'poles' must map exactly 'positive' and 'negative' to labels, got {got}", fix)
    pos = _check_name(where, "positive pole label", poles["positive"])
    neg = _check_name(where, "negative pole label", poles["negative"])

    prompts = data.get("prompts")
    if not isinstance(prompts, Mapping):
        problem = f"'prompts' must map each pole label to a list of prompts, got {_kind(prompts)}"
        raise _fail(where, problem, f"write 'prompts: {{{pos}: [...], {neg}: [...]}}'")
    for pole in (pos, neg):
        if pole not in prompts:
            raise _fail(where, f"'prompts' has no list for pole {pole!r}", f"add 'prompts: {pole}: [...]'")
        if not isinstance(prompts[pole] or [], list):
            problem = f"prompts for pole {pole!r} are {_kind(prompts[pole])}, not a list"
            raise _fail(where, problem, f"write them as a YAML list under 'prompts: {pole}:'")
    extra = [repr(k) for k in prompts if k not in (pos, neg)]
    if extra:
        problem = f"'prompts' has key(s) {', '.join(extra)} that are not poles ({pos!r}, {neg!r})"
        raise _fail(where, problem, "rename them to a pole label or declare them under 'poles'")

    pairs_raw = data.get("pairs") or []
    if not isinstance(pairs_raw, list):
        raise _fail(where, f"'pairs' is {_kind(pairs_raw)}, not a list", "write 'pairs:' as a YAML list")
    for i, item in enumerate(pairs_raw):
        if not isinstance(item, Mapping) or set(item) != {pos, neg}:
            got = sorted(map(str, item)) if isinstance(item, Mapping) else _kind(item)
            problem = f"pair {i} has keys {got}; each pair needs exactly the keys {pos!r} and {neg!r}"
            raise _fail(where, problem, f'write each pair as - {{{pos}: "...", {neg}: "..."}}')
    return ProbeSet(
        name=data.get("name", path.stem),
        description=data.get("description") or "",
        positive=pos,
        negative=neg,
        positive_prompts=prompts[pos] or [],
        negative_prompts=prompts[neg] or [],
        pairs=[(item[pos], item[neg]) for item in pairs_raw],
        source=path,
    )


def load_probe_set(path_or_name: PathLike, probes_dir: PathLike | None = None) -> ProbeSet:
    """Load and validate a probe set from a YAML path or a short name such as ``"tempo"``."""
    path = resolve_probe_path(path_or_name, probes_dir)
    return _parse_probe_mapping(_read_mapping(path, f"probe set file {str(path)!r}", PROBE_SET_KEYS), path)


def load_eval_prompts(path_or_name: PathLike, probes_dir: PathLike | None = None) -> list[str]:
    """Load a flat evaluation prompt list (keys: ``name``, ``description``, ``kind: eval``, ``prompts``)."""
    path = resolve_probe_path(path_or_name, probes_dir)
    where = f"eval prompt file {str(path)!r}"
    data = _read_mapping(path, where, EVAL_SET_KEYS)
    if "poles" in data:
        raise _fail(
            where, "is a probe set (it has 'poles'), not an eval prompt list", "load it with load_probe_set()"
        )
    _check_keys(where, data, EVAL_SET_KEYS)
    if data.get("kind", "eval") != "eval":
        raise _fail(where, f"'kind' is {data['kind']!r}", "set 'kind: eval' or remove the key")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        got = "empty" if prompts == [] else _kind(prompts)
        raise _fail(where, f"'prompts' must be a non-empty list, got {got}", "add 'prompts: [\"...\", ...]'")
    _check_prompts(where, "'prompts'", prompts, {})
    return list(prompts)
