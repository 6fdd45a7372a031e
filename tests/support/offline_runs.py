"""Reading offline W&B runs without the W&B server.

wandb >= 0.2x writes ``files/config.yaml`` of an offline run only when it is synced, and its Python
package no longer ships a reader for ``.wandb`` files (that moved into the Go ``wandb-core``), so the
record framing (LevelDB log format) is read here and each record is parsed with W&B's own protobuf
schema (``wandb.proto.wandb_internal_pb2``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _wandb_records(path: Path):
    """Raw records of a ``.wandb`` file (LevelDB-log framing: 7-byte file header, 32 KiB blocks,
    records with a 7-byte header: crc32 u32, length u16, type u8 = full/first/middle/last)."""
    import struct

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file.")
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0:  # zero padding up to the end of the block
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def read_offline_run(run_folder: str | os.PathLike) -> dict:
    """Config, summary, group and project of an offline run folder (``.../wandb/offline-run-*``).

    W&B >= 0.2x writes ``files/config.yaml`` only when syncing, so this reads the ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb2

    files = sorted(Path(run_folder).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"No .wandb file in {run_folder}.")
    out: dict = {"config": {}, "summary": {}, "group": None, "project": None}

    def items(updates, target):
        for it in updates:
            key = it.key or ".".join(it.nested_key)
            if key:
                target[key] = json.loads(it.value_json)

    for raw in _wandb_records(files[0]):
        rec = pb2.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["project"] = rec.run.run_group, rec.run.project
            items(rec.run.config.update, out["config"])
        elif kind == "config":
            items(rec.config.update, out["config"])
        elif kind == "summary":
            items(rec.summary.update, out["summary"])
    out["config"].pop("_wandb", None)
    return out
