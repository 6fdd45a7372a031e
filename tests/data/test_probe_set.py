"""Tests for the shipped probe sets and the loader in steerlit.data.probe_set (real files, no mocks)."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from steerlit.data.probe_set import (
    ProbeExample,
    ProbeSet,
    ProbeSetError,
    available_probe_sets,
    check_unique_names,
    default_probes_dir,
    load_eval_prompts,
    load_probe_set,
    normalize_prompt,
    validate_against_eval,
)
from steerlit.data.splits import split_examples

REPO_PROBES = Path(__file__).resolve().parents[2] / "probes"

TEMPO_WORDS = {
    "fast", "faster", "slow", "slower", "slowly", "quick", "quickly", "rapid", "rapidly", "brisk",
    "frantic", "driving", "uptempo", "up-tempo", "downtempo", "down-tempo", "tempo", "bpm",
    "laid-back", "languid", "unhurried", "hurried", "sluggish", "leisurely", "plodding", "crawling",
    "dragging", "lazy", "racing", "breakneck", "galloping", "strolling", "ambling", "swift", "speedy",
    "presto", "allegro", "adagio", "largo", "andante", "fast-paced", "slow-paced", "slow-moving",
    "lumbering", "relentless", "restless", "bouncy", "slinky", "whirling", "swaying", "lively",
    "upbeat", "pace", "double-time", "half-time",
}  # fmt: skip
TIMBRE_WORDS = {
    "bright", "brighter", "dark", "darker", "crisp", "sparkling", "shimmering", "airy", "brilliant",
    "trebly", "treble", "glassy", "glittering", "silvery", "crystalline", "bell-like", "warm",
    "muffled", "mellow", "murky", "bass-heavy", "dull", "dusky", "velvety", "muddy", "tinny",
    "boomy", "booming",
}  # fmt: skip
FILLERS = {"a", "an", "and", "at"}
GENRE_WORDS = [
    "rock", "jazz", "techno", "classical", "folk", "hip hop", "ambient", "latin", "metal", "reggae",
    "funk", "orchestral", "lo-fi", "country", "blues", "pop", "piano", "guitar", "synth", "strings",
]  # fmt: skip


def words(text: str) -> set[str]:
    """Lower-cased word tokens, with hyphenated compounds also split into their parts."""
    tokens = set(re.findall(r"[a-z0-9&]+(?:-[a-z0-9]+)*", text.lower()))
    return tokens | {part for token in tokens for part in token.split("-")}


def differing_words(a: str, b: str) -> tuple[list[str], list[str]]:
    """The word spans left after stripping the common prefix and suffix of ``a`` and ``b``."""
    wa, wb = a.lower().replace(",", " ").split(), b.lower().replace(",", " ").split()
    start = 0
    while start < min(len(wa), len(wb)) and wa[start] == wb[start]:
        start += 1
    end = 0
    while end < min(len(wa), len(wb)) - start and wa[-1 - end] == wb[-1 - end]:
        end += 1
    return wa[start : len(wa) - end], wb[start : len(wb) - end]


def all_texts(ps: ProbeSet) -> list[str]:
    return ps.positive_prompts + ps.negative_prompts + [t for pair in ps.pairs for t in pair]


def mean_words(texts: list[str]) -> float:
    return sum(len(t.split()) for t in texts) / len(texts)


@pytest.fixture(scope="module")
def tempo() -> ProbeSet:
    return load_probe_set("tempo", probes_dir=REPO_PROBES)


@pytest.fixture(scope="module")
def timbre() -> ProbeSet:
    return load_probe_set("timbre", probes_dir=REPO_PROBES)


@pytest.fixture(scope="module")
def neutral() -> list[str]:
    return load_eval_prompts("neutral", probes_dir=REPO_PROBES)


# --------------------------------------------------------------------------- shipped files


def test_shipped_files_resolve_from_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERLIT_PROBES_DIR", raising=False)
    assert default_probes_dir() == REPO_PROBES
    assert {"tempo", "timbre", "neutral"} <= set(available_probe_sets())
    by_path = load_probe_set(REPO_PROBES / "tempo.yaml")
    assert by_path.positive_prompts == load_probe_set("tempo").positive_prompts


@pytest.mark.parametrize("name, pos, neg", [("tempo", "fast", "slow"), ("timbre", "bright", "dark")])
def test_probe_sets_are_large_and_unique(name: str, pos: str, neg: str) -> None:
    ps = load_probe_set(name, probes_dir=REPO_PROBES)
    assert (ps.name, ps.positive, ps.negative) == (name, pos, neg)
    assert ps.description
    for prompts in (ps.positive_prompts, ps.negative_prompts):
        assert len({normalize_prompt(t) for t in prompts}) >= 100
    assert not {normalize_prompt(t) for t in ps.positive_prompts} & {
        normalize_prompt(t) for t in ps.negative_prompts
    }
    assert len(ps.pairs) >= 100
    assert len({normalize_prompt(p) for p, _ in ps.pairs}) == len(ps.pairs)


@pytest.mark.parametrize("name", ["tempo", "timbre"])
def test_pairs_are_twins_differing_only_in_concept_words(name: str) -> None:
    ps = load_probe_set(name, probes_dir=REPO_PROBES)
    # documented construction: pairs are the pole prompts, aligned by index
    assert ps.pairs == list(zip(ps.positive_prompts, ps.negative_prompts))
    concept = TEMPO_WORDS if name == "tempo" else TIMBRE_WORDS | {"bass"}
    for pos_text, neg_text in ps.pairs:
        for span in differing_words(pos_text, neg_text):
            assert span, (pos_text, neg_text)
            rest = [w for w in span if not (words(w) & concept or w in FILLERS or w.isdigit())]
            assert not rest, (pos_text, neg_text, rest)


def test_neutral_set_is_large_and_held_out(tempo: ProbeSet, timbre: ProbeSet, neutral: list[str]) -> None:
    assert len({normalize_prompt(t) for t in neutral}) == len(neutral) >= 30
    keys = {normalize_prompt(t) for t in neutral}
    for ps in (tempo, timbre):
        assert not keys & {normalize_prompt(t) for t in all_texts(ps)}
        validate_against_eval(ps, neutral)


def test_concept_words_do_not_leak(tempo: ProbeSet, timbre: ProbeSet, neutral: list[str]) -> None:
    for text in all_texts(tempo):
        assert not words(text) & TIMBRE_WORDS, text
    for text in all_texts(timbre):
        assert not words(text) & TEMPO_WORDS, text
    for text in neutral:
        assert not words(text) & (TEMPO_WORDS | TIMBRE_WORDS), text
    # and each pole prompt does carry a concept word
    for text in tempo.positive_prompts + tempo.negative_prompts:
        assert words(text) & TEMPO_WORDS, text
    for text in timbre.positive_prompts + timbre.negative_prompts:
        assert words(text) & (TIMBRE_WORDS | {"bass"}), text


@pytest.mark.parametrize("name", ["tempo", "timbre"])
def test_poles_are_balanced(name: str) -> None:
    ps = load_probe_set(name, probes_dir=REPO_PROBES)
    pos_len, neg_len = mean_words(ps.positive_prompts), mean_words(ps.negative_prompts)
    assert abs(pos_len - neg_len) <= 0.15 * max(pos_len, neg_len)
    for genre in GENRE_WORDS:
        pos_count = sum(genre in t.lower() for t in ps.positive_prompts)
        neg_count = sum(genre in t.lower() for t in ps.negative_prompts)
        assert abs(pos_count - neg_count) <= max(2, 0.2 * max(pos_count, neg_count)), genre
    assert sum(any(g in t.lower() for t in ps.positive_prompts) for g in GENRE_WORDS) >= 15


# --------------------------------------------------------------------------- examples


def test_examples_poles_and_pairs(tempo: ProbeSet) -> None:
    poles = tempo.examples("poles")
    assert len(poles) == len(tempo.positive_prompts) + len(tempo.negative_prompts)
    assert poles[7] == ProbeExample("tempo/fast/007", tempo.positive_prompts[7], 1, "fast", None)
    assert poles[len(tempo.positive_prompts)].id == "tempo/slow/000"
    assert {e.label for e in poles if e.pole == "slow"} == {0}
    pairs = tempo.examples("pairs")
    assert len(pairs) == 2 * len(tempo.pairs)
    assert pairs[24:26] == [
        ProbeExample("tempo/pair/012/fast", tempo.pairs[12][0], 1, "fast", 12),
        ProbeExample("tempo/pair/012/slow", tempo.pairs[12][1], 0, "slow", 12),
    ]
    assert len({e.id for e in poles + pairs}) == len(poles) + len(pairs)
    assert tempo.examples() == poles  # stable
    with pytest.raises(ValueError, match="form"):
        tempo.examples("both")  # type: ignore[arg-type]


def test_in_memory_probe_set_is_validated() -> None:
    ps = ProbeSet("x", "", "a", "b", ["one"], ["two"])
    with pytest.raises(ProbeSetError, match="has no 'pairs'"):
        ps.examples("pairs")
    with pytest.raises(ProbeSetError, match="in both pole .a. .item 0. and pole .b."):
        ProbeSet("x", "", "a", "b", ["same"], ["SAME "])


# --------------------------------------------------------------------------- validation errors

GOOD = """\
name: demo
poles: {positive: up, negative: down}
prompts:
  up: ["a rising line", "climbing chords"]
  down: ["a falling line", "descending chords"]
"""


PAIRS = """\
pairs:
  - {up: "a rising line", down: "a falling line"}
  - {up: "climbing chords", down: "descending chords"}
"""


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_and_name_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, GOOD, "demo.yaml")
    ps = load_probe_set("demo", probes_dir=tmp_path)
    assert ps.positive_prompts == ["a rising line", "climbing chords"] and ps.pairs == []
    assert ps.source == tmp_path / "demo.yaml"
    monkeypatch.setenv("STEERLIT_PROBES_DIR", str(tmp_path))
    assert load_probe_set("demo").name == "demo"
    assert available_probe_sets() == ["demo"]


BAD_CASES = [
    ("not_mapping", "- a\n- b\n", ["not a mapping", "poles"]),
    ("empty_file", "", ["empty", "not a mapping"]),
    ("invalid_yaml", "poles: {positive: up\n", ["not valid YAML"]),
    ("unknown_key", GOOD + "colour: red\n", ["unknown key", "'colour'", "allowed keys", "pairs"]),
    ("missing_poles", GOOD.replace("poles: {positive: up, negative: down}\n", ""), ["'poles'", "missing"]),
    ("bad_poles", GOOD.replace("negative: down", "neg: down"), ["'poles' must map exactly"]),
    ("missing_pole_prompts", GOOD.replace('  down: ["a falling line", "descending chords"]\n', ""),
     ["no list for pole 'down'"]),
    ("extra_pole_prompts", GOOD + '  sideways: ["x"]\n', ["'sideways'", "not poles"]),
    ("empty_pole", GOOD.replace('["a falling line", "descending chords"]', "[]"), ["pole 'down' has no prompts"]),
    ("non_string", GOOD.replace('"climbing chords"', "42"), ["prompt 1 of pole 'up'", "int", "not a string"]),
    ("blank_prompt", GOOD.replace('"climbing chords"', '"  "'), ["empty string"]),
    ("dup_within", GOOD.replace('"climbing chords"', '"A  Rising line"'),
     ["duplicate prompt", "'A  Rising line'", "pole 'up'", "ignoring case and whitespace"]),
    ("dup_across", GOOD.replace('"descending chords"', '"Climbing Chords"'),
     ["in both pole 'up'", "pole 'down'", "'Climbing Chords'", "exactly one pole"]),
    ("pair_wrong_keys", GOOD + 'pairs:\n  - {up: "a", sideways: "b"}\n',
     ["pair 0 has keys", "['sideways', 'up']", "exactly the keys 'up' and 'down'"]),
    ("pair_not_mapping", GOOD + 'pairs:\n  - ["a", "b"]\n', ["pair 0 has keys", "list"]),
    ("pair_same_text", GOOD + 'pairs:\n  - {up: "a b", down: "A  b"}\n', ["pair 0 has the same text twice"]),
    ("pair_label_swap", GOOD + 'pairs:\n  - {up: "a falling line", down: "x"}\n',
     ["pair 0 uses 'a falling line' as 'up'", "'down' pole prompt"]),
    ("pair_twin_reused", GOOD + PAIRS + '  - {up: "climbing chords", down: "a falling line"}\n',
     ["pair 2 reuses 'climbing chords', already a twin in pair 1", "its own two texts"]),
    ("pair_count", GOOD + PAIRS.rsplit("  - ", 1)[0],
     ["has 1 pairs but 2 'up' and 2 'down' prompts", "one pair per pole prompt", "remove 'pairs:'"]),
    ("pair_order", GOOD + 'pairs:\n  - {up: "climbing chords", down: "descending chords"}\n'
     '  - {up: "a rising line", down: "a falling line"}\n',
     ["pair 0 is ('climbing chords', 'descending chords') but prompt 0", "order of the pole prompts"]),
    ("bad_name", GOOD.replace("name: demo", "name: my/demo"), ["name 'my/demo' is not a simple name"]),
    ("eval_as_probe", 'name: e\nkind: eval\nprompts: ["a", "b"]\n', ["eval prompt list", "load_eval_prompts"]),
]  # fmt: skip


@pytest.mark.parametrize("case, text, fragments", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_probe_set_errors(tmp_path: Path, case: str, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProbeSetError) as info:
        load_probe_set(path)
    message = str(info.value)
    assert str(path) in message and "Fix:" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, ValueError)


def test_missing_file_lists_available_names(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "demo.yaml")
    write(tmp_path, 'prompts: ["a"]\n', "held_out.yml")
    with pytest.raises(ProbeSetError, match=r"'nope'.*not found.*available names.*demo, held_out.*Fix:"):
        load_probe_set("nope", probes_dir=tmp_path)
    with pytest.raises(ProbeSetError, match="not found"):
        load_probe_set(tmp_path / "missing.yaml")
    with pytest.raises(ProbeSetError, match="not found"):
        load_eval_prompts("nope", probes_dir=tmp_path)
    assert load_eval_prompts("held_out", probes_dir=tmp_path) == ["a"]


EVAL_BAD_CASES = [
    ("eval_unknown_key", 'prompts: ["a"]\nextra: 1\n', ["unknown key", "'extra'", "kind"]),
    ("eval_no_prompts", "name: e\n", ["'prompts' must be a non-empty list", "missing"]),
    ("eval_empty", "prompts: []\n", ["non-empty list", "empty"]),
    ("eval_dup", 'prompts: ["a b", "A B"]\n', ["duplicate prompt 'A B'"]),
    ("eval_non_string", "prompts: [true]\n", ["bool", "not a string"]),
    ("eval_wrong_kind", 'kind: probe\nprompts: ["a"]\n', ["'kind' is 'probe'"]),
    ("probe_as_eval", GOOD, ["is a probe set", "load_probe_set"]),
]


@pytest.mark.parametrize("case, text, fragments", EVAL_BAD_CASES, ids=[c[0] for c in EVAL_BAD_CASES])
def test_eval_prompt_errors(tmp_path: Path, case: str, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProbeSetError) as info:
        load_eval_prompts(path)
    message = str(info.value)
    assert str(path) in message and "Fix:" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_prompt_in_pole_and_eval_set(tmp_path: Path) -> None:
    ps = load_probe_set(write(tmp_path, GOOD, "demo.yaml"))
    validate_against_eval(ps, ["something else"])
    with pytest.raises(ProbeSetError) as info:
        validate_against_eval(ps, ["other", "CLIMBING   chords"])
    message = str(info.value)
    assert "'climbing chords'" in message and "pole 'up'" in message and "evaluation set" in message
    assert "demo.yaml" in message and "Fix:" in message
    with pytest.raises(TypeError):
        validate_against_eval(ps, "climbing chords")


# --------------------------------------------------------------------------- splits


def label_counts(examples: list[ProbeExample]) -> Counter[int]:
    return Counter(e.label for e in examples)


@pytest.mark.parametrize("form", ["poles", "pairs"])
def test_split_is_deterministic_stratified_disjoint_complete(tempo: ProbeSet, form: str) -> None:
    examples = tempo.examples(form)  # type: ignore[arg-type]
    splits = split_examples(examples, seed=3)
    assert list(splits) == ["train", "val", "test"]
    assert splits == split_examples(examples, seed=3)
    shuffled = examples[:]
    random.Random(0).shuffle(shuffled)
    assert {k: {e.id for e in v} for k, v in split_examples(shuffled, seed=3).items()} == {
        k: {e.id for e in v} for k, v in splits.items()
    }
    assert split_examples(examples, seed=4) != splits

    ids = [e.id for split in splits.values() for e in split]
    assert len(ids) == len(set(ids)) == len(examples)
    n = len(examples)
    for name, frac in zip(["train", "val", "test"], [0.7, 0.15, 0.15]):
        part = splits[name]
        assert abs(len(part) - frac * n) <= 2
        counts = label_counts(part)
        assert abs(counts[1] - counts[0]) <= 1, (name, counts)


def test_split_keeps_pairs_together(timbre: ProbeSet) -> None:
    splits = split_examples(timbre.examples("pairs"), fractions=(0.5, 0.25, 0.25), seed=1)
    where: dict[int, set[str]] = {}
    for name, part in splits.items():
        for e in part:
            where.setdefault(e.pair_index, set()).add(name)  # type: ignore[arg-type]
        assert label_counts(part)[0] == label_counts(part)[1]
    assert len(where) == len(timbre.pairs)
    assert all(len(s) == 1 for s in where.values())


def test_split_edge_cases(tempo: ProbeSet) -> None:
    examples = tempo.examples()
    only_train = split_examples(examples, fractions=(1, 0, 0))
    assert len(only_train["train"]) == len(examples) and only_train["val"] == only_train["test"] == []
    assert split_examples([]) == {"train": [], "val": [], "test": []}
    for bad in [(0.5, 0.5), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="fractions"):
            split_examples(examples, fractions=bad)


def test_pairs_that_repeat_the_pole_prompts_are_accepted(tmp_path: Path) -> None:
    ps = load_probe_set(write(tmp_path, GOOD + PAIRS, "demo.yaml"))
    assert ps.pairs == list(zip(ps.positive_prompts, ps.negative_prompts))
    assert len(ps.examples("pairs")) == len(ps.examples("poles")) == 4


def test_probe_set_names_must_be_unique(tmp_path: Path, tempo: ProbeSet) -> None:
    """Issue 23: two probe sets with the same ``name:`` wrote one folder and one concept was lost."""
    first = load_probe_set(write(tmp_path, GOOD, "first.yaml"))
    second = load_probe_set(write(tmp_path, GOOD.replace("rising", "soaring"), "second.yaml"))
    check_unique_names([first, tempo])
    with pytest.raises(ProbeSetError) as info:
        check_unique_names([first, tempo, second])
    message = str(info.value)
    assert "first.yaml" in message and "second.yaml" in message and "both named 'demo'" in message
    assert "Fix: give each probe set its own 'name:'" in message
