"""Resumable sweep results: one folder per sweep.

Layout of ``out_dir``::

    samples/<key>.wav   float32 WAV per row, written atomically (:func:`steerlit.files.atomic_write_bytes`)
    results.jsonl       one JSON object per finished row (the runner's record + ``wav``, relative path,
                        ``wav_bytes``, ``wav_sha256`` and ``record_sha256``)
    settings.json       generation settings of the sweep; a rerun with other settings is refused once the
                        store holds a row (a failed first batch does not lock the folder)
    results.csv         optional, written by :meth:`ResultStore.to_csv` (atomic)

``key`` is the row's content key (:mod:`steerlit.engines.keys`). Integrity: each line carries
``record_sha256``, the sha256 of its own canonical JSON without that field, and the size and sha256 of its
WAV; on reading (resume), a line whose checksum or WAV does not match -- a WAV that was truncated, emptied,
overwritten or removed -- is skipped, so its row is generated again.

A batch is committed by writing its WAVs first (each one atomic and durable), then all of its lines
with one ``write`` + ``flush`` (so a killed process loses no committed row; rows whose lines a power loss
drops are regenerated on rerun). A process killed at any point leaves at most a torn last line (ignored
on load and cut off before the next append) and WAVs without a line (regenerated on rerun, with
the same result, since a row's output depends only on its fields and the batch plan,
:mod:`steerlit.engines.plan`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from steerlit.files import append_durable, atomic_write_bytes, atomic_write_csv, atomic_write_text

RECORD_CHECKSUM = "record_sha256"  # a line's checksum of itself (see record_checksum)

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"
SAMPLES_DIR = "samples"


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def record_checksum(record: Mapping) -> str:
    """sha256 of a record's canonical JSON (sorted keys, NaN allowed) without its :data:`RECORD_CHECKSUM`."""
    body = {k: v for k, v in record.items() if k != RECORD_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A float32 WAV file's bytes, as ``soundfile`` writes them, with the time stamp of libsndfile's ``PEAK``
    chunk set to 0: the same audio always gives the same bytes (and ``wav_sha256``)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), int(sample_rate), subtype="FLOAT", format="WAV")
    data = bytearray(buffer.getvalue())
    pos = 12  # after "RIFF" <size> "WAVE": chunks of id (4), size (4), body (padded to an even size)
    while pos + 8 <= len(data):
        size = struct.unpack_from("<I", data, pos + 4)[0]
        if data[pos : pos + 4] == b"PEAK" and size >= 8:
            data[pos + 12 : pos + 16] = bytes(4)  # body: version (4), time stamp (4), peaks
        pos += 8 + size + (size & 1)
    return bytes(data)


class DamagedWavError(RuntimeError):
    """A stored WAV that cannot be read back."""


class ResultStore:
    """Append-only, crash-safe store of finished grid rows (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.samples_dir = self.out_dir / SAMPLES_DIR
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out_dir / RESULTS_FILE
        self._repaired = False
        self._verified: dict[str, tuple[int, int, str]] = {}  # wav path -> (size, mtime_ns, sha256) checked
        self._wav_checksums: dict[str, set[tuple[int, str]]] | None = None  # key -> stored (size, sha256)s

    # ---- settings -------------------------------------------------------------------------
    def settings(self) -> dict:
        """The stored generation settings ({} for a new store)."""
        path = self.out_dir / SETTINGS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def ensure_settings(self, settings: Mapping, ignore: tuple[str, ...] = ("batch_size",)) -> None:
        """Record the sweep's generation settings; refuse to resume a store made with other ones
        (keys in ``ignore`` are stored but may differ: a new batch size changes no codes). A store that holds no
        row yet (e.g. its first batch failed) takes the new settings."""
        path = self.out_dir / SETTINGS_FILE
        settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        if path.exists() and self.rows():
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

    def _write_wav(self, key: str, audio: np.ndarray, sample_rate: int) -> dict:
        """Write a row's WAV atomically; return its ``wav``, ``wav_bytes`` and ``wav_sha256`` fields."""
        data = wav_bytes(audio, sample_rate)
        atomic_write_bytes(self.wav_path(key), data)
        return {
            "wav": f"{SAMPLES_DIR}/{key}.wav",
            "wav_bytes": len(data),
            "wav_sha256": hashlib.sha256(data).hexdigest(),
        }

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
        as stored (JSON-able copies; where audio was written ``wav`` is ``samples/<key>.wav``, with ``wav_bytes``
        and ``wav_sha256``; every record gets its ``record_sha256``).

        Each record needs a ``key``."""
        records = [{k: _jsonable(v) for k, v in r.items()} for r in records]
        if not records:
            return []
        audios = list(audios) if audios is not None else [None] * len(records)
        for rec, audio in zip(records, audios):
            if audio is not None:
                rec.update(self._write_wav(rec["key"], audio, sample_rate))
            rec[RECORD_CHECKSUM] = record_checksum(rec)
        text = "".join(json.dumps(rec, sort_keys=False) + "\n" for rec in records)
        self._repair_tail()
        append_durable(self.results_path, text)
        return records

    # ---- reading --------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Finished rows in commit order. Skipped: a torn line, a line that does not match its
        ``record_sha256``, and rows whose WAV is missing or does not match its size and sha256 (they are
        generated again). A key committed twice keeps its first intact record."""
        if not self.results_path.exists():
            return []
        out: dict[str, dict] = {}
        self._wav_checksums = {}
        with open(self.results_path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn last line
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = rec.get("key") if isinstance(rec, dict) else None
                if key is None or key in out or rec.get(RECORD_CHECKSUM) != record_checksum(rec):
                    continue
                if rec.get("wav"):
                    self._wav_checksums.setdefault(key, set()).add(
                        (rec.get("wav_bytes"), rec.get("wav_sha256"))
                    )
                if rec.get("wav") and not self.wav_is_intact(rec):
                    continue
                out[key] = rec
        return list(out.values())

    def wav_is_intact(self, record: Mapping) -> bool:
        """Whether a record's WAV exists with the size and sha256 it was stored with."""
        return self._wav_matches(
            self.out_dir / record["wav"], {(record.get("wav_bytes"), record.get("wav_sha256"))}
        )

    def _wav_matches(self, path: Path, checksums: set[tuple[int, str]]) -> bool:
        """Whether ``path`` exists with one of the (size, sha256) ``checksums`` (each file is hashed once per
        store object and change)."""
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size not in {size for size, _ in checksums}:
            return False
        seen = self._verified.get(str(path))
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
            seen = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            self._verified[str(path)] = seen
        return (seen[0], seen[2]) in checksums

    def done_keys(self) -> set[str]:
        return {r["key"] for r in self.rows()}

    def __len__(self) -> int:
        return len(self.rows())

    def to_csv(self, path: str | os.PathLike | None = None) -> Path:
        """Write all finished rows, sorted by key, as CSV (atomic; NaN and None as empty cells; without the
        lines' ``record_sha256``); default ``<out_dir>/results.csv``."""
        path = Path(path) if path is not None else self.out_dir / "results.csv"
        rows = [{k: v for k, v in r.items() if k != RECORD_CHECKSUM} for r in self.rows()]
        return atomic_write_csv(path, sorted(rows, key=lambda r: r["key"]))

    def read_wav(self, key: str) -> tuple[np.ndarray, int]:
        """A stored row's audio (S,) float32 and sample rate; :class:`DamagedWavError` if it is unreadable or
        does not match the size and sha256 its result line stored."""
        path = self.wav_path(key)
        if self._wav_checksums is None:
            self.rows()
        checksums = (self._wav_checksums or {}).get(key)
        if checksums and not self._wav_matches(path, checksums):
            raise DamagedWavError(
                f"{path} does not match the size and sha256 stored with its result (truncated or overwritten); "
                "rerun the grid to generate it again."
            )
        try:
            audio, sr = sf.read(str(path), dtype="float32")
        except (sf.LibsndfileError, OSError) as err:
            raise DamagedWavError(
                f"{path} cannot be read ({err}); delete it and rerun the grid to generate it again."
            ) from err
        return audio, sr
