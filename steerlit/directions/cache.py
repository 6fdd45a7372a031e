"""Activation cache files: shards, index and loading.

Layout under ``<run>/activations/``::

    index.json                          # config, examples (id, text, label, pole, split, shard), shards + status
    class_sums.safetensors              # streaming per-split class sums: <split>/sums/<site> (2, H) f64, counts
    train/shard-00000.safetensors       # one (n, H) tensor per site + "index" (n,) + "labels" (n,)
    val/shard-00000.safetensors
    test/...

Content keys. The *configuration fingerprint* (:func:`fingerprint` of the extraction's ``cache_config``: model
id, weights fingerprint, model dtype, sites, source, reduction, generation settings of the ``generate`` source,
storage dtype, probe-set split and shard layout) says how values are computed; a shard's *key*
(:func:`shard_key`) is the sha256 of that fingerprint and of its examples (id, text and label of each, in
order), so editing one prompt's text changes the key of exactly the shard it is in. The index's
``fingerprint`` is the sha256 of the configuration fingerprint and every shard key: it changes whenever
any cached value does (the class sums and direction files carry it).

Integrity. A shard file is written atomically (:mod:`steerlit.files`) and carries in its metadata its key,
its example ids and ``sha256``, a checksum of its tensors (:func:`steerlit.files.tensors_sha256`). A shard
counts as complete only if it reads back with the expected key and ids, its tensors match the checksum
(values overwritten in place are caught) and the index does not mark it ``partial``; anything else is
recomputed. Readers verify the checksum too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from steerlit.files import TEMP_GLOB, atomic_save_safetensors, atomic_write_text, tensors_sha256

INDEX_FILE = "index.json"
SUMS_FILE = "class_sums.safetensors"
CACHE_VERSION = 2  # 2: content keys (weights fingerprint, per-shard example hashes) and tensor checksums
KEY_LENGTH = 16  # hex digits of fingerprints and shard keys
STATUSES = ("pending", "complete", "partial")


class CacheError(RuntimeError):
    """An activation cache that is missing, incomplete or inconsistent."""


def activations_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "activations"


def shard_path(run_dir: str | Path, shard: str) -> Path:
    return activations_dir(run_dir) / f"{shard}.safetensors"


def sha256_text(*parts: str) -> str:
    """Short sha256 of text parts (NUL-separated)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:KEY_LENGTH]


def fingerprint(config: Mapping) -> str:
    """Short stable hash of a configuration (JSON with sorted keys)."""
    return sha256_text(json.dumps(dict(config), sort_keys=True))


def examples_digest(examples: Iterable) -> str:
    """Short sha256 of examples' ``(id, text, label)`` in order (records or dicts with those fields)."""
    rows = [
        [e["id"], e["text"], int(e["label"])] if isinstance(e, Mapping) else [e.id, e.text, int(e.label)]
        for e in examples
    ]
    return sha256_text(json.dumps(rows, ensure_ascii=True, separators=(",", ":")))


def shard_key(config_fingerprint: str, examples: Iterable) -> str:
    """The content key of one shard: its configuration fingerprint and its examples' ids, texts and labels."""
    return sha256_text(config_fingerprint, examples_digest(examples))


def content_fingerprint(config_fingerprint: str, shard_keys: Iterable[str]) -> str:
    """The index's fingerprint: the configuration fingerprint and every shard key, in shard order."""
    return sha256_text(config_fingerprint, *shard_keys)


def write_shard(
    path: Path,
    acts: Mapping[str, torch.Tensor],
    *,
    index: torch.Tensor,
    labels: torch.Tensor,
    ids: list[str],
    key: str,
    fp: str = "",
    rank: int = 0,
) -> None:
    """Write one shard atomically: ``acts`` {site: (n, H)}, ``index``/``labels`` (n,); its content ``key``
    (:func:`shard_key`), configuration fingerprint ``fp``, ``rank`` that wrote it and a checksum of its tensors."""
    tensors = {site: a.detach().cpu().contiguous() for site, a in acts.items()}
    tensors["index"] = index.detach().cpu().long().contiguous()
    tensors["labels"] = labels.detach().cpu().long().contiguous()
    meta = {"key": key, "fingerprint": fp, "ids": json.dumps(ids), "rank": str(rank)}
    atomic_save_safetensors(path, tensors, {**meta, "sha256": tensors_sha256(tensors)})


def read_shard(
    path: Path, sites: Iterable[str] | None = None, *, verify: bool = True
) -> tuple[dict[str, torch.Tensor], dict]:
    """``({site: (n, H), "index": (n,), "labels": (n,)}, metadata)``; raises CacheError if the file is missing,
    unreadable or (``verify``) its tensors do not match the checksum in its metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())
            wanted = names if sites is None else [*sites, "index", "labels"]
            missing = [n for n in wanted if n not in names]
            if missing:
                raise CacheError(f"Shard {path} lacks tensors {missing[:5]}.")
            tensors = {n: f.get_tensor(n) for n in (names if verify else wanted)}
    except CacheError:
        raise
    except Exception as err:  # missing or truncated file
        raise CacheError(f"Shard {path} is unreadable ({err}).") from err
    if verify and tensors_sha256(tensors) != meta.get("sha256"):
        raise CacheError(
            f"Shard {path} does not match its checksum (its values were changed after it was written); "
            "run the extraction again to recompute it."
        )
    return {n: tensors[n] for n in wanted}, meta


def shard_is_complete(path: Path, key: str, ids: list[str]) -> bool:
    """True if ``path`` reads back with content key ``key``, exactly these example ids and tensors that match
    its checksum."""
    if not path.exists():
        return False
    try:
        _, meta = read_shard(path)
    except CacheError:
        return False
    return meta.get("key") == key and json.loads(meta.get("ids", "null")) == ids


def remove_stale_files(run_dir: str | Path, keep: set[str]) -> list[Path]:
    """Delete shard files whose names are not in ``keep`` and leftover temp files; returns them.

    Called by rank 0 before a (re)run, when no other process writes, so that a cache rebuilt with
    other splits or shard sizes holds no stale shards.
    """
    root = activations_dir(run_dir)
    removed = []
    for path in [*root.glob("*/shard-*.safetensors"), *root.glob(f"*/{TEMP_GLOB}"), *root.glob(TEMP_GLOB)]:
        name = path.relative_to(root).with_suffix("").as_posix()
        if path.name.startswith(".") or name not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_index(run_dir: str | Path) -> dict | None:
    path = activations_dir(run_dir) / INDEX_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn index (should not happen: it is written atomically) is rebuilt


def require_index(run_dir: str | Path) -> dict:
    """The cache's index, or :class:`CacheError` saying how to make the cache."""
    index = read_index(run_dir)
    if index is None:
        raise CacheError(
            f"No activation cache in {activations_dir(run_dir)}: run extraction first (`steerlit extract ...`, "
            "or `steerlit run ...`, which resumes)."
        )
    return index


def write_index(run_dir: str | Path, index: dict) -> None:
    atomic_write_text(activations_dir(run_dir) / INDEX_FILE, json.dumps(index, indent=1))


def mark_shard(run_dir: str | Path, shard: str, status: str) -> None:
    """Set one shard's status in ``index.json`` (e.g. ``partial`` to force a redo)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    index = read_index(run_dir)
    if index is None:
        raise CacheError(f"No activation index in {activations_dir(run_dir)}.")
    for entry in index["shards"]:
        if entry["name"] == shard:
            entry["status"] = status
    write_index(run_dir, index)


def load_activation_cache(
    run_dir: str | Path, split: str | Iterable[str] | None = None, sites: Iterable[str] | None = None
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Load cached activations.

    Returns ``({site: (N, H) tensor}, meta)`` where ``meta[i]`` is the example dict (``index``, ``id``,
    ``text``, ``label``, ``pole``, ``pair_index``, ``split``, ``shard``) of row ``i``. Rows are in cache
    order (train, val, test; within a split the probe-set split order), which does not depend on how
    many processes wrote the cache. ``split``: one split name, several, or None for all.
    """
    index = require_index(run_dir)
    wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
    sites = list(index["sites"] if sites is None else sites)
    unknown = [s for s in sites if s not in index["sites"]]
    if unknown:
        raise CacheError(f"Sites {unknown} are not in the cache (it has {index['sites']}).")
    by_shard: dict[str, list[dict]] = {}
    for ex in index["examples"]:
        by_shard.setdefault(ex["shard"], []).append(ex)
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    meta: list[dict] = []
    for entry in index["shards"]:
        if wanted is not None and entry["split"] not in wanted:
            continue
        if entry["status"] != "complete":
            raise CacheError(
                f"Shard {entry['name']} is {entry['status']}: the extraction did not finish; run it again to resume."
            )
        tensors, smeta = read_shard(shard_path(run_dir, entry["name"]), sites)
        examples = by_shard[entry["name"]]
        key = shard_key(index.get("config_fingerprint", ""), examples)
        if json.loads(smeta.get("ids", "null")) != [e["id"] for e in examples] or smeta.get("key") != key:
            raise CacheError(
                f"Shard {entry['name']} holds other examples than the index lists; run the extraction again."
            )
        for s in sites:
            chunks[s].append(tensors[s])
        meta.extend(examples)
    if not meta:
        raise CacheError(f"No cached examples for split {split!r} in {activations_dir(run_dir)}.")
    return {s: torch.cat(c) for s, c in chunks.items()}, meta


def labels_of(meta: list[dict]) -> torch.Tensor:
    """(N,) long labels of a ``meta`` list (1 = positive pole)."""
    return torch.tensor([m["label"] for m in meta], dtype=torch.long)
