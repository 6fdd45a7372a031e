"""ClipMeasurer: clips measured in spawned workers; a native crash gives nan and a reason, never a dead run."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steerlit.metrics.attributes import compute_attributes
from steerlit.metrics.numba_cache import warm_metrics
from steerlit.metrics.pool import ERROR_FIELD, ClipMeasurer, attribute_measure
from steerlit.metrics.settings import MetricsSettings, TempoSettings

from .crashing_metric import CRASH_MARK, LEVEL_NAMES, levels, levels_or_segfault
from .synth_audio import click_track, sine, white_noise

SR = 16000
TESTS = Path(__file__).parents[1]


def clips() -> dict[str, np.ndarray]:
    out = {f"clip{i}": white_noise(SR, 0.5, seed=i, amplitude=0.1 * (i + 1)) for i in range(6)}
    out["clip3"] = out["clip3"].copy()
    out["clip3"][0] = CRASH_MARK
    return out


def test_a_native_crash_gives_nan_and_a_reason_and_the_run_goes_on(caplog):
    audio = clips()
    caplog.set_level(logging.WARNING, logger="steerlit.metrics.pool")
    with ClipMeasurer(workers=2, measure=levels_or_segfault, value_names=LEVEL_NAMES) as measurer:
        for key, clip in audio.items():
            measurer.submit(key, clip, SR)
        values = measurer.results()
        measurer.submit("after", audio["clip0"], SR)  # the pool was restarted for later clips
        after = measurer.result("after")
    assert list(values) == list(audio)
    crashed = values.pop("clip3")
    assert all(math.isnan(crashed[name]) for name in LEVEL_NAMES)
    assert (
        "SIGSEGV" in crashed[ERROR_FIELD] and "retried alone with a fresh numba cache" in crashed[ERROR_FIELD]
    )
    for key, got in values.items():
        assert got == levels(audio[key], SR)  # bit for bit, no error field
    assert after == levels(audio["clip0"], SR)
    messages = [r.getMessage() for r in caplog.records]
    assert any("metric worker died (SIGSEGV)" in m and "retried once" in m for m in messages)
    assert any("'clip3' could not be measured" in m for m in messages)
    assert not multiprocessing.active_children()  # the context manager shut every pool down


def test_default_measure_in_workers_equals_the_in_process_values():
    warm_metrics()  # what the study does before any worker starts
    settings = MetricsSettings(tempo=TempoSettings(std_bpm=1.5))
    batch = {
        "clicks": click_track(120, SR, 3.0) + sine(440.0, SR, 3.0, amplitude=0.2),
        "int16_stereo": np.round(
            np.stack([sine(220.0, SR, 2.0), white_noise(SR, 2.0)], axis=1) * 32767
        ).astype(np.int16),
        "silence": np.zeros(SR, np.float32),
    }
    with ClipMeasurer(settings, workers=2) as measurer:
        for key, clip in batch.items():
            measurer.submit(key, clip, SR)
        got = {key: measurer.result(key) for key in reversed(batch)}
    for key, clip in batch.items():
        expected = compute_attributes(clip, SR, tempo_kwargs={"start_bpm": 120.0, "std_bpm": 1.5})
        assert np.array_equal(list(got[key].values()), list(expected.values()), equal_nan=True), key
        assert list(got[key]) == list(expected)
    assert attribute_measure(settings)(batch["clicks"], SR) == got["clicks"]


def test_synchronous_fallback_and_usage_errors():
    audio = clips()
    with ClipMeasurer(workers=0, measure=levels, value_names=LEVEL_NAMES, max_pending=1) as measurer:
        for key in ("clip0", "clip1"):
            measurer.submit(key, audio[key], SR)
        assert measurer.pending == 2
        with pytest.raises(ValueError, match="already submitted"):
            measurer.submit("clip0", audio["clip0"], SR)
        with pytest.raises(ValueError, match="sample rate"):
            measurer.submit("bad_sr", audio["clip0"], 0)
        assert measurer.results() == {k: levels(audio[k], SR) for k in ("clip0", "clip1")}
        with pytest.raises(KeyError, match="collected already"):
            measurer.result("clip0")
    with pytest.raises(RuntimeError, match="closed"):
        measurer.submit("late", audio["clip0"], SR)


def test_a_metric_exception_is_raised_by_result_not_swallowed():
    nan_clip = np.full(SR, np.nan, np.float32)
    with ClipMeasurer(workers=1, measure=levels, value_names=LEVEL_NAMES, max_pending=1) as measurer:
        measurer.submit("nan", nan_clip, SR)
        measurer.submit("ok", sine(440.0, SR, 0.5), SR)  # waits for room: max_pending=1
        with pytest.raises(ValueError, match="non-finite samples"):
            measurer.result("nan")
        assert measurer.result("ok") == levels(sine(440.0, SR, 0.5), SR)
    assert not multiprocessing.active_children()


UNGUARDED_MEASURING = """
import json, sys
import numpy as np
from steerlit.metrics.pool import ClipMeasurer
from metrics.synth_audio import white_noise

audio = white_noise(16000, 0.5, seed=1, amplitude=0.2)
for attempt in range(2):  # a second measurer in the same process measures here at once, without a warning
    with ClipMeasurer(workers=1) as measurer:
        measurer.submit("a", audio, 16000)
        measurer.submit("b", audio[::-1].copy(), 16000)
        print(json.dumps(measurer.results()), flush=True)
"""


def test_an_unguarded_script_measures_in_its_own_process_with_one_warning(tmp_path):
    """Issue 23: a script without an ``if __name__ == "__main__":`` guard: its spawned workers re-run it and
    end at once; the clips are measured in the script's process with their real values and one warning."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_MEASURING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    audio = white_noise(SR, 0.5, seed=1, amplitude=0.2)
    want = {"a": compute_attributes(audio, SR), "b": compute_attributes(audio[::-1].copy(), SR)}
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(line) == json.loads(json.dumps(want)) for line in lines)
    assert done.stderr.count("metric workers could not start") == 1, done.stderr[-3000:]
    assert 'if __name__ == "__main__":' in done.stderr and "metrics.workers=0" in done.stderr
    assert str(script) in done.stderr and "Traceback" not in done.stderr
