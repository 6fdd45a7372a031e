"""The result store: crash-safe appends, torn lines, checksums of lines and WAVs, settings, CSV."""

import hashlib
import json
import math

import numpy as np
import pytest

from steerlit.engines.results import DamagedWavError, ResultStore, record_checksum


def rec(key, **fields):
    return {"key": key, "prompt": "p", **fields}


def without_checksums(records):
    drop = ("wav_bytes", "wav_sha256", "record_sha256")
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_write_and_read_back(tmp_path):
    store = ResultStore(tmp_path)
    stored = store.write_batch([rec("a", rms=0.5), rec("b", rms=np.float32(0.25))], [np.ones(8), None], 16000)
    assert without_checksums(stored) == [rec("a", rms=0.5, wav="samples/a.wav"), rec("b", rms=0.25)]
    assert store.rows() == stored
    data = store.wav_path("a").read_bytes()
    assert stored[0]["wav_bytes"] == len(data) and stored[0]["wav_sha256"] == hashlib.sha256(data).hexdigest()
    assert all(r["record_sha256"] == record_checksum(r) for r in stored) and "wav_sha256" not in stored[1]
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


@pytest.mark.parametrize("damage", ["truncated", "emptied", "overwritten"])
def test_a_damaged_wav_drops_its_row_until_it_is_written_again(tmp_path, damage):
    store = ResultStore(tmp_path)
    audio = np.linspace(-1, 1, 400)
    store.write_batch([rec("a"), rec("b")], [audio, audio], 8000)
    path = store.wav_path("a")
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "emptied": b"", "overwritten": data[:-4] + b"\0\0\0\0"}
    path.write_bytes(damaged[damage])
    reopened = ResultStore(tmp_path)
    assert reopened.done_keys() == {"b"}  # a's row is generated again on resume
    with pytest.raises(DamagedWavError, match="rerun the grid"):  # read back as it is, it would mislead
        reopened.read_wav("a")
    reopened.write_batch([rec("a")], [audio], 8000)  # the regenerated row
    assert [r["key"] for r in ResultStore(tmp_path).rows()] == ["a", "b"]
    assert np.array_equal(ResultStore(tmp_path).read_wav("a")[0], audio.astype(np.float32))


def test_an_edited_line_is_not_trusted(tmp_path):
    store = ResultStore(tmp_path)
    store.write_batch([rec("a", rms=0.5), rec("b", rms=0.25)], None, 8000)
    lines = store.results_path.read_text().splitlines(keepends=True)
    line = json.loads(lines[0])
    line["rms"] = 0.75  # a flipped value, without its checksum
    store.results_path.write_text(json.dumps(line) + "\n" + lines[1])
    assert ResultStore(tmp_path).done_keys() == {"b"}


def test_settings_are_checked(tmp_path):
    store = ResultStore(tmp_path)
    assert store.settings() == {}
    store.ensure_settings({"model_id": "tiny", "dtype": "float32", "batch_size": 4})
    # no row yet (a first batch that failed): other settings replace the stored ones
    store.ensure_settings({"model_id": "tiny", "dtype": "bfloat16", "batch_size": 2})
    assert store.settings() == {"model_id": "tiny", "dtype": "bfloat16", "batch_size": 2}
    store.ensure_settings({"model_id": "tiny", "dtype": "float32", "batch_size": 4})
    store.write_batch([rec("a")], None, 8000)
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
