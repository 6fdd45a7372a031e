"""Captions for synthetic clips, and the testbed's probe prompt sets.

A caption names the instrument and the groove (and sometimes a genre word and the key) and,
when the clip is clearly fast/slow or bright/dark, a synonym of that pole:

* tempo: ``bpm >= FAST_BPM`` -> fast words, ``bpm <= SLOW_BPM`` -> slow words, else unsaid;
* brightness: ``>= BRIGHT_MIN`` -> bright words, ``<= DARK_MAX`` -> dark words, else unsaid;
* each said attribute is also dropped with probability ``DROP_P``, so that well over 40% of
  captions leave tempo and/or brightness unsaid (the middle ranges alone are ~1/3 of clips).

Held-out neutral prompts: training captions use the templates in ``TRAIN_TEMPLATES`` only; the
neutral evaluation prompts (``neutral_prompts``) use ``HELDOUT_TEMPLATE``, a sentence form never
seen in training (with words that all occur in training captions), and carry no tempo or
brightness word. ``tests/testbed/test_captions.py`` checks that no neutral prompt is a training
caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from steerlit.files import atomic_write_text
from steerlit.testbed.synth import INSTRUMENTS, KEY_NAMES, PATTERNS, ClipSpec, spec_for_index

FAST_BPM, SLOW_BPM = 140.0, 90.0
BRIGHT_MIN, DARK_MAX = 0.65, 0.35
DROP_P = 0.1

TEMPO_WORDS = {
    "fast": ("fast", "upbeat", "driving", "energetic", "quick"),
    "slow": ("slow", "laid-back", "sluggish", "relaxed", "unhurried"),
}
BRIGHT_WORDS = {
    "bright": ("bright", "crisp", "shimmering", "sparkling"),
    "dark": ("dark", "warm", "muffled", "mellow"),
}
INSTRUMENT_WORDS = {
    "pluck": ("plucked synth", "pluck arpeggio", "plucky synth"),
    "organ": ("organ chords", "organ", "electric organ"),
    "bass": ("synth bass", "bassline", "bass synth"),
    "lead": ("lead synth", "synth lead", "lead melody"),
}
PATTERN_WORDS = {
    "four_on_floor": ("four-on-the-floor beat", "steady kick drum", "dance beat"),
    "backbeat": ("backbeat", "rock beat", "snare backbeat"),
    "shuffle": ("shuffle beat", "swing groove", "shuffled drums"),
}
GENRE_WORDS = {
    "four_on_floor": ("house", "techno", "dance"),
    "backbeat": ("rock", "pop", "indie"),
    "shuffle": ("blues", "swing", "jazz"),
}
ALL_TEMPO_WORDS = frozenset(w for ws in TEMPO_WORDS.values() for w in ws)
ALL_BRIGHT_WORDS = frozenset(w for ws in BRIGHT_WORDS.values() for w in ws)

# {adj}: tempo/brightness adjectives (may be empty); {inst}, {pat}, {genre}, {key}.
TRAIN_TEMPLATES = (
    "{adj} {inst} over a {pat}",
    "a {adj} {genre} track with {inst}",
    "{adj} {genre} loop, {inst} and {pat}",
    "{inst} with a {pat}, {adj}",
    "{adj} {inst} in {key} minor, {genre}",
)
HELDOUT_TEMPLATE = "{genre} with {inst} and a {pat}"


def tempo_pole(bpm: float) -> str | None:
    """'fast', 'slow' or None (middle tempi are left unsaid)."""
    return "fast" if bpm >= FAST_BPM else "slow" if bpm <= SLOW_BPM else None


def brightness_pole(brightness: float) -> str | None:
    """'bright', 'dark' or None."""
    return "bright" if brightness >= BRIGHT_MIN else "dark" if brightness <= DARK_MAX else None


def _fill(template: str, adjectives: list[str], inst: str, pat: str, genre: str, key: str) -> str:
    adj = " and ".join(adjectives) if len(adjectives) == 2 else "".join(adjectives)
    text = template.format(adj=adj, inst=inst, pat=pat, genre=genre, key=key)
    text = text.replace(" ,", ",").replace(", ,", ",").strip(" ,")
    text = " ".join(text.split())
    return text.replace("a a ", "a ")


def caption_for(spec: ClipSpec, rng: np.random.Generator) -> str:
    """A training caption for ``spec`` (random synonyms/template drawn from ``rng``)."""
    adjectives = []
    tp, bp = tempo_pole(spec.bpm), brightness_pole(spec.brightness)
    if tp and rng.random() >= DROP_P:
        adjectives.append(str(rng.choice(TEMPO_WORDS[tp])))
    if bp and rng.random() >= DROP_P:
        adjectives.append(str(rng.choice(BRIGHT_WORDS[bp])))
    rng.shuffle(adjectives)
    template = str(rng.choice(TRAIN_TEMPLATES))
    return _fill(
        template,
        adjectives,
        str(rng.choice(INSTRUMENT_WORDS[spec.instrument])),
        str(rng.choice(PATTERN_WORDS[spec.pattern])),
        str(rng.choice(GENRE_WORDS[spec.pattern])),
        KEY_NAMES[spec.key],
    )


def training_captions(num_clips: int, base_seed: int = 0, seed: int = 0) -> list[str]:
    """Caption of each training clip ``spec_for_index(i, base_seed)``, i < num_clips."""
    rng = np.random.default_rng([seed, 12345])
    return [caption_for(spec_for_index(i, base_seed), rng) for i in range(num_clips)]


def _pole_prompts(words: dict, pos: str, neg: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Matched pole prompts: prompt i of both poles differs only in the pole adjective."""
    rng = np.random.default_rng(seed)
    pos_out, neg_out, seen = [], [], set()
    while len(pos_out) < n:
        inst = str(rng.choice(INSTRUMENT_WORDS[str(rng.choice(INSTRUMENTS))]))
        pattern = str(rng.choice(PATTERNS))
        pat, genre = str(rng.choice(PATTERN_WORDS[pattern])), str(rng.choice(GENRE_WORDS[pattern]))
        template = str(rng.choice(TRAIN_TEMPLATES))
        key = KEY_NAMES[int(rng.integers(12))]
        j = int(rng.integers(len(words[pos])))
        p = _fill(template, [words[pos][j]], inst, pat, genre, key)
        q = _fill(template, [words[neg][j % len(words[neg])]], inst, pat, genre, key)
        if p in seen:
            continue
        seen.add(p)
        pos_out.append(p)
        neg_out.append(q)
    return pos_out, neg_out


def neutral_prompts(n: int = 24) -> list[str]:
    """Held-out neutral prompts (HELDOUT_TEMPLATE, no tempo or brightness word), deterministic."""
    out = []
    for i in range(n):
        pattern = PATTERNS[i % len(PATTERNS)]
        inst = INSTRUMENTS[(i // len(PATTERNS)) % len(INSTRUMENTS)]
        j = i // (len(PATTERNS) * len(INSTRUMENTS))
        out.append(
            HELDOUT_TEMPLATE.format(
                genre=GENRE_WORDS[pattern][j % 3],
                inst=INSTRUMENT_WORDS[inst][j % 3],
                pat=PATTERN_WORDS[pattern][j % 3],
            )
        )
    return out


def _pole_set(name: str, description: str, poles: tuple[str, str], prompts: tuple[list, list]) -> dict:
    """A two-pole probe set (schema of ``probes/*.yaml``) whose prompt i of both poles are twins."""
    (positive, negative), (pos, neg) = poles, prompts
    return {
        "name": name,
        "description": description,
        "poles": {"positive": positive, "negative": negative},
        "prompts": {positive: pos, negative: neg},
        "pairs": [{positive: p, negative: n} for p, n in zip(pos, neg)],
    }


def probe_sets(n_per_pole: int = 48, n_neutral: int = 24) -> dict[str, dict]:
    """The three testbed probe sets as plain dicts (schema of ``probes/*.yaml``)."""
    tempo = _pole_prompts(TEMPO_WORDS, "fast", "slow", n_per_pole, seed=101)
    brightness = _pole_prompts(BRIGHT_WORDS, "bright", "dark", n_per_pole, seed=202)
    return {
        "testbed_tempo": _pole_set(
            "testbed_tempo",
            f"Tempo poles for the steerlit testbed (synthetic music; fast >= {FAST_BPM:.0f} BPM, slow <= "
            f"{SLOW_BPM:.0f} BPM in "
            "training captions). Prompt i of both poles differs only in the tempo word (`pairs` lists the twins).",
            ("fast", "slow"),
            tempo,
        ),
        "testbed_timbre": _pole_set(
            "testbed_timbre",
            "Brightness poles for the steerlit testbed (low-pass cutoff of all instruments). Prompt i of "
            "both poles differs only in the brightness word (`pairs` lists the twins).",
            ("bright", "dark"),
            brightness,
        ),
        "testbed_neutral": {
            "name": "testbed_neutral",
            "description": (
                "Neutral prompts (no tempo or brightness word) in a sentence template never used for "
                "training captions."
            ),
            "prompts": neutral_prompts(n_neutral),
        },
    }


def write_probe_sets(folder: str | Path = "probes") -> list[Path]:
    """Write ``testbed_tempo.yaml``, ``testbed_timbre.yaml``, ``testbed_neutral.yaml`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(data, sort_keys=False, width=120))
        for name, data in probe_sets().items()
    ]


def training_corpus(num_clips: int = 3000) -> list[str]:
    """Sentences for the tokenizer: training captions, probe prompts and neutral prompts."""
    sets = probe_sets()
    corpus = training_captions(num_clips)
    for s in sets.values():
        prompts = s["prompts"]
        corpus += prompts if isinstance(prompts, list) else [p for v in prompts.values() for p in v]
    return corpus
