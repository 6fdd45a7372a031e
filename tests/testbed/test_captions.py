"""Captions: vocabulary per pole, unsaid share, neutral hold-out, probe files."""

import numpy as np
import yaml

from steerlit.testbed.captions import (
    ALL_BRIGHT_WORDS,
    ALL_TEMPO_WORDS,
    BRIGHT_WORDS,
    FAST_BPM,
    SLOW_BPM,
    TEMPO_WORDS,
    caption_for,
    neutral_prompts,
    probe_sets,
    training_captions,
    write_probe_sets,
)
from steerlit.testbed.synth import spec_for_index


def _has(text: str, words) -> bool:
    return any(w in text.replace(",", " ").split() for w in words)


def test_captions_use_the_right_pole_words():
    rng = np.random.default_rng(0)
    for i in range(400):
        spec = spec_for_index(i)
        cap = caption_for(spec, rng)
        if spec.bpm >= FAST_BPM:
            assert not _has(cap, TEMPO_WORDS["slow"]), cap
        elif spec.bpm <= SLOW_BPM:
            assert not _has(cap, TEMPO_WORDS["fast"]), cap
        else:
            assert not _has(cap, ALL_TEMPO_WORDS), cap
        if spec.brightness >= 0.65:
            assert not _has(cap, BRIGHT_WORDS["dark"]), cap
        elif spec.brightness <= 0.35:
            assert not _has(cap, BRIGHT_WORDS["bright"]), cap
        else:
            assert not _has(cap, ALL_BRIGHT_WORDS), cap


def test_share_leaving_attributes_unsaid_and_determinism():
    caps = training_captions(1000)
    assert caps == training_captions(1000)
    unsaid = np.mean([not (_has(c, ALL_TEMPO_WORDS) and _has(c, ALL_BRIGHT_WORDS)) for c in caps])
    assert 0.4 <= unsaid <= 0.8
    assert np.mean([_has(c, ALL_TEMPO_WORDS) for c in caps]) > 0.4


def test_neutral_prompts_are_held_out():
    neutral = neutral_prompts()
    assert len(set(neutral)) == len(neutral) >= 20
    assert not any(_has(p, ALL_TEMPO_WORDS | ALL_BRIGHT_WORDS) for p in neutral)
    train = set(training_captions(6000))
    assert not train & set(neutral)


def test_probe_sets_schema(tmp_path):
    sets = probe_sets()
    for name, pos, neg in (("testbed_tempo", "fast", "slow"), ("testbed_timbre", "bright", "dark")):
        s = sets[name]
        assert s["poles"] == {"positive": pos, "negative": neg}
        for pole in (pos, neg):
            assert len(set(s["prompts"][pole])) == len(s["prompts"][pole]) >= 40
    paths = write_probe_sets(tmp_path)
    loaded = {p.stem: yaml.safe_load(p.read_text()) for p in paths}
    assert loaded["testbed_neutral"]["name"] == "testbed_neutral"
    assert loaded["testbed_tempo"]["prompts"]["fast"] == sets["testbed_tempo"]["prompts"]["fast"]
