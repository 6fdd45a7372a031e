"""The result store: crash-safe appends, torn lines, missing WAVs, settings, CSV."""

import math

import numpy as np
import pytest

from steerlit.engines.results import ResultStore


def rec(key, **fields):
    return {"key": key, "prompt": "p", **fields}


def test_write_and_read_back(tmp_path):
    store = ResultStore(tmp_path)
    stored = store.write_batch([rec("a", rms=0.5), rec("b", rms=np.float32(0.25))], [np.ones(8), None], 16000)
    assert stored == [rec("a", rms=0.5, wav="samples/a.wav"), rec("b", rms=np.float32(0.25))]
    assert store.rows() == [rec("a", rms=0.5, wav="samples/a.wav"), rec("b", rms=0.25)]
    audio, sr = store.read_wav("a")
    assert sr == 16000 and audio.dtype == np.float32 and np.array_equal(audio, np.ones(8, np.float32))
    assert not list(store.samples_dir.glob(".*"))  # no temp files left
    # a key committed twice keeps its first record
    store.write_batch([rec("a", rms=9.0)], None, 16000)
    assert store.rows()[0]["rms"] == 0.5 and len(store) == 2 and store.done_keys() == {"a", "b"}


def test_torn_line_and_missing_wav(tmp_path):
    store = ResultStore(tmp_path)
    store.write_batch([rec("a"), rec("b")], [np.zeros(4), np.zeros(4)], 8000)
    with open(store.results_path, "a") as f:
        f.write('{"key": "torn", "pro')
    (store.samples_dir / "b.wav").unlink()
    reopened = ResultStore(tmp_path)
    assert [r["key"] for r in reopened.rows()] == ["a"]
    reopened.write_batch([rec("c")], None, 8000)  # the torn line is cut before the append
    lines = reopened.results_path.read_text().splitlines(keepends=True)
    assert all(line.endswith("}\n") for line in lines) and [r["key"] for r in reopened.rows()] == ["a", "c"]


def test_settings_are_checked(tmp_path):
    store = ResultStore(tmp_path)
    assert store.settings() == {}
    store.ensure_settings({"model_id": "tiny", "dtype": "float32", "batch_size": 4})
    store.ensure_settings({"model_id": "tiny", "dtype": "float32", "batch_size": 8})  # batch size may differ
    assert store.settings()["batch_size"] == 4
    with pytest.raises(ValueError, match="other settings .'dtype': .'float32', 'bfloat16'"):
        store.ensure_settings({"model_id": "tiny", "dtype": "bfloat16", "batch_size": 4})


def test_csv_sorted_with_empty_cells(tmp_path):
    store = ResultStore(tmp_path)
    store.write_batch([rec("b", rms=math.nan), rec("a", concept=None, rms=1.5)], None, 8000)
    path = store.to_csv()
    assert path == tmp_path / "results.csv"
    assert path.read_text().splitlines() == ["key,prompt,concept,rms", "a,p,,1.5", "b,p,,"]
