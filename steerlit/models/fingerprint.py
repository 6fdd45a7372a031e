"""What a loaded model computes, as a short fingerprint: the content of the files it was loaded from (weights,
configs, tokenizer), or its parameters once they changed in memory. Activation shards, grid rows and direction files
carry it, so results of another model are never reused (:func:`weights_fingerprint`).

A model loaded from files (a folder or a hub snapshot) is identified by its files: sha256 over each file's name,
size and content digest. The content digest of a file in a Hugging Face cache is the name of the blob it links to
(the hub's sha256 of LFS files, git's hash of the others: free); of any other file, its sha256, computed once and
remembered by size, mtime, ctime and inode in ``<steerlit cache>/file-sha256.json`` (a retrained checkpoint saved
into the same folder is hashed again). A model built in memory, or whose parameters were modified in place after
loading, is identified by a sha256 of its parameters' and buffers' bytes instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from steerlit.files import atomic_write_json, sha256_file, tensors_sha256
from steerlit.models.adapter import MusicGenAdapter

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# The files of a model folder that determine its outputs (weight shards named by an index are added).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    *WEIGHT_FILES,
    "tokenizer.json",
    "tokenizer_config.json",
    "spiece.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "processor_config.json",
    "preprocessor_config.json",
)
DIGESTS_FILE = "file-sha256.json"
FINGERPRINT_LENGTH = 16  # hex digits kept in fingerprints
_BLOB_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def cache_dir() -> Path:
    return Path(os.environ.get("STEERLIT_CACHE", Path.home() / ".cache" / "steerlit"))


@dataclass
class LoadedFrom:
    """Where a loaded model's weights came from, its parameters' version counters right after loading, and the
    folder's fingerprint once computed."""

    folder: Path
    versions: tuple[int, ...]
    fingerprint: str | None = None


_LOADED_FROM: weakref.WeakKeyDictionary[nn.Module, LoadedFrom] = weakref.WeakKeyDictionary()
_PARAMETER_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def parameter_versions(model: nn.Module) -> tuple[int, ...]:
    """Torch's in-place version counter of every parameter: any in-place change of a weight bumps one."""
    return tuple(p._version for p in model.parameters())


def remember_files(model: nn.Module, folder: str | Path) -> None:
    """Record that ``model`` was just loaded from ``folder`` (see :func:`weights_fingerprint`)."""
    _LOADED_FROM[model] = LoadedFrom(Path(folder), parameter_versions(model))


@contextlib.contextmanager
def weights_rewritten_unchanged(module: nn.Module) -> Iterator[None]:
    """A block that writes every weight in place with its own value, e.g. DDP's broadcast of rank 0's parameters
    when every rank loaded the same files: a model unmodified before it keeps its files' fingerprint after it
    (the in-place writes bump torch's version counters, which :func:`weights_fingerprint` would read as a
    change)."""
    loaded = _LOADED_FROM.get(module)
    unmodified = loaded is not None and loaded.versions == parameter_versions(module)
    yield
    if unmodified:
        loaded.versions = parameter_versions(module)


def model_files(folder: str | Path) -> list[Path]:
    """The files of a model folder that determine its outputs: :data:`MODEL_FILES` present, plus the weight
    shards that an index file names."""
    folder = Path(folder)
    files = [folder / name for name in MODEL_FILES if (folder / name).is_file()]
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = json.loads((folder / index).read_text()).get("weight_map", {}).values()
            files += [folder / name for name in sorted(set(shards)) if (folder / name).is_file()]
    return files


def file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def read_digest_memo() -> dict:
    try:
        return json.loads((cache_dir() / DIGESTS_FILE).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: digests are recomputed


def file_digests(files: Sequence[Path]) -> list[str]:
    """Content digests of ``files`` (see the module docstring): blob names in a hub cache, else sha256s
    remembered by file stamp."""
    memo = read_digest_memo()
    changed = False
    out = []
    for path in files:
        target = path.resolve()
        if path.is_symlink() and target.parent.name == "blobs" and _BLOB_NAME.fullmatch(target.name):
            out.append(target.name)
            continue
        stamp, entry = file_stamp(target), memo.get(str(target))
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            entry = {"stamp": stamp, "sha256": sha256_file(target)}
            memo[str(target)], changed = entry, True
        out.append(entry["sha256"])
    if changed:
        kept = {p: e for p, e in memo.items() if Path(p).exists()}
        with contextlib.suppress(OSError):  # a read-only cache only costs hashing again next time
            atomic_write_json(cache_dir() / DIGESTS_FILE, kept)
    return out


def folder_fingerprint(folder: str | Path) -> str:
    """Fingerprint of a model folder: sha256 over each model file's name, size and content digest."""
    files = model_files(folder)
    digest = hashlib.sha256(b"files\n")
    for path, content in zip(files, file_digests(files)):
        digest.update(f"{path.name}\t{path.stat().st_size}\t{content}\n".encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def parameters_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model in memory: sha256 over its state dict (names, dtypes, shapes, bytes); remembered
    until a parameter changes in place."""
    versions = parameter_versions(model)
    known = _PARAMETER_FINGERPRINTS.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    fingerprint = "p" + tensors_sha256(model.state_dict())[: FINGERPRINT_LENGTH - 1]
    _PARAMETER_FINGERPRINTS[model] = (versions, fingerprint)
    return fingerprint


def weights_fingerprint(model: MusicGenAdapter | nn.Module) -> str:
    """16 hex digits identifying what ``model`` (an adapter or its module) computes: its files' fingerprint
    when it was loaded by :func:`~steerlit.models.loading.load_model` and not modified since, else its
    parameters' (the latter start with ``p``). The same files give the same fingerprint in every process, dtype
    and device."""
    module = model.model if isinstance(model, MusicGenAdapter) else model
    loaded = _LOADED_FROM.get(module)
    if loaded is None or loaded.versions != parameter_versions(module):
        return parameters_fingerprint(module)
    if loaded.fingerprint is None:
        loaded.fingerprint = folder_fingerprint(loaded.folder)
    return loaded.fingerprint
