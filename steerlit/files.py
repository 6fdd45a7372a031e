"""Atomic file writes: text, JSON, CSV, safetensors, anything written through a path, and whole folders.

Every writer puts the data into a hidden temp file next to the target (``.<name>.tmp<pid>``), fsyncs it,
then ``os.replace``-s it over the target, so a reader (or a rerun after a crash) sees either the old file or
the new one, never half of one. On any exception the temp file is removed and the target is untouched.
This is the only module in steerlit that does temp-then-rename. It also holds the checksums the caches and
stores verify their files with (:func:`sha256_file`, :func:`tensors_sha256`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TEMP_GLOB = ".*.tmp*"  # what an interrupted write can leave behind (cleaned by the caches)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write ``path`` through (e.g. with soundfile or torch.save); it replaces ``path``
    when the block ends without an exception, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temp folder to fill; it is renamed to ``path`` when the block ends without an exception.

    If ``path`` already exists by then (another process finished first), the temp folder is removed and the
    existing one is kept: the writers of one folder must produce the same content. On an exception the temp
    folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash of a process with the same pid
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:  # a non-empty folder is already there
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 1) -> Path:
    """JSON (keys in insertion order); NaN/inf are refused, as strict JSON readers would."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def csv_text(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Dict rows as CSV text: ``columns`` (default: the union of the rows' keys in first-seen order);
    NaN and None as empty cells; keys outside ``columns`` are left out."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def atomic_write_csv(
    path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str] | None = None
) -> Path:
    return atomic_write_text(path, csv_text(rows, columns))


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` through a temp file (tensors are made contiguous)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return Path(path)


def atomic_save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Lay out a matplotlib ``fig``, write it to ``path`` as PNG atomically, close it; returns ``path``."""
    import matplotlib.pyplot as plt  # deferred: matplotlib

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def append_durable(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` and fsync it, for append-only logs (a torn last line is the reader's to skip:
    see ``engines.results.ResultStore``); committed lines survive a power loss, not only a killed process."""
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


HASH_CHUNK = 1 << 24  # bytes read at a time when hashing a file


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """Hex sha256 of named tensors: for each name in sorted order, its name, dtype, shape and raw bytes
    (CPU, contiguous). The same values give the same digest on every device and machine."""
    import torch  # deferred: torch (this module imports no third-party package when loaded)

    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()
