"""Resumable sweep results: one folder per sweep.

Layout of ``out_dir``::

    samples/<key>.wav   float32 WAV per row, written atomically (:func:`steerlit.files.atomic_path`)
    results.jsonl       one JSON object per finished row (row.flat() + metrics + ``wav``, relative path)
    settings.json       generation settings of the sweep; a rerun with other settings is refused
    results.csv         optional, written by :meth:`ResultStore.to_csv` (atomic)

A batch is committed by writing its WAVs first (each one atomic and durable), then all of its lines
with one ``write`` + ``flush`` (so a killed process loses no committed row; rows whose lines a power loss
drops are regenerated on rerun). A process killed at any point leaves at most a torn last line (ignored
on load and cut off before the next append) and WAVs without a line (regenerated on rerun, with
the same result, since a row's output depends only on its fields and the batch plan,
:mod:`steerlit.engines.plan`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from steerlit.files import append_durable, atomic_path, atomic_write_csv, atomic_write_text

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"
SAMPLES_DIR = "samples"


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


class ResultStore:
    """Append-only, crash-safe store of finished grid rows (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.samples_dir = self.out_dir / SAMPLES_DIR
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out_dir / RESULTS_FILE
        self._repaired = False

    # ---- settings -------------------------------------------------------------------------
    def settings(self) -> dict:
        """The stored generation settings ({} for a new store)."""
        path = self.out_dir / SETTINGS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def ensure_settings(self, settings: Mapping, ignore: tuple[str, ...] = ("batch_size",)) -> None:
        """Record the sweep's generation settings; refuse to resume a store made with other ones
        (keys in ``ignore`` are stored but may differ: a new batch size changes no codes)."""
        path = self.out_dir / SETTINGS_FILE
        settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        if path.exists():
            old = json.loads(path.read_text())
            keys = (set(old) | set(settings)) - set(ignore)
            diff = {k: (old.get(k), settings.get(k)) for k in sorted(keys) if old.get(k) != settings.get(k)}
            if diff:
                raise ValueError(
                    f"{self.out_dir} holds results generated with other settings {diff} (stored, requested); "
                    "use another output folder or the original settings."
                )
            return
        atomic_write_text(path, json.dumps(settings, sort_keys=True, indent=1) + "\n")

    # ---- writing --------------------------------------------------------------------------
    def wav_path(self, key: str) -> Path:
        return self.samples_dir / f"{key}.wav"

    def _write_wav(self, key: str, audio: np.ndarray, sample_rate: int) -> None:
        with atomic_path(self.wav_path(key)) as tmp:
            audio = np.asarray(audio, dtype=np.float32)
            sf.write(str(tmp), audio, int(sample_rate), subtype="FLOAT", format="WAV")

    def _repair_tail(self) -> None:
        """Cut a torn last line (a crash mid-append) so that the next append starts on a new line."""
        if self._repaired or not self.results_path.exists():
            self._repaired = True
            return
        with open(self.results_path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
        self._repaired = True

    def write_batch(
        self, records: Iterable[Mapping], audios: Iterable[np.ndarray | None] | None, sample_rate: int
    ) -> list[dict]:
        """Commit finished rows: WAVs (if ``audios``) then one append of all their lines; return the records
        as stored (copies; ``wav`` is set to ``samples/<key>.wav`` where audio was written).

        Each record needs a ``key``."""
        records = [dict(r) for r in records]
        if not records:
            return []
        audios = list(audios) if audios is not None else [None] * len(records)
        for rec, audio in zip(records, audios):
            if audio is not None:
                self._write_wav(rec["key"], audio, sample_rate)
                rec["wav"] = f"{SAMPLES_DIR}/{rec['key']}.wav"
        text = "".join(
            json.dumps({k: _jsonable(v) for k, v in rec.items()}, sort_keys=False) + "\n" for rec in records
        )
        self._repair_tail()
        append_durable(self.results_path, text)
        return records

    # ---- reading --------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Finished rows in commit order; a torn line and rows whose WAV is missing are skipped; a key
        committed twice keeps its first record."""
        if not self.results_path.exists():
            return []
        out: dict[str, dict] = {}
        with open(self.results_path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn last line
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = rec.get("key")
                if key is None or key in out:
                    continue
                wav = rec.get("wav")
                if wav and not (self.out_dir / wav).exists():
                    continue
                out[key] = rec
        return list(out.values())

    def done_keys(self) -> set[str]:
        return {r["key"] for r in self.rows()}

    def __len__(self) -> int:
        return len(self.rows())

    def to_csv(self, path: str | os.PathLike | None = None) -> Path:
        """Write all finished rows, sorted by key, as CSV (atomic; NaN and None as empty cells); default
        ``<out_dir>/results.csv``."""
        path = Path(path) if path is not None else self.out_dir / "results.csv"
        return atomic_write_csv(path, sorted(self.rows(), key=lambda r: r["key"]))

    def read_wav(self, key: str) -> tuple[np.ndarray, int]:
        audio, sr = sf.read(str(self.wav_path(key)), dtype="float32")
        return audio, sr
