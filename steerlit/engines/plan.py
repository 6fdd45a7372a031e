"""The batch plan and resume state of a grid: one implementation for the local runner and the DDP grid.

The plan is a pure function of the rows and the batch size: rows deduplicated by key and sorted by
``(prompt_index, prompt, seed, key)``, then cut into chunks. Each row also has a content key
(:mod:`steerlit.engines.keys`: its fields, the exact vectors it is steered with and the generation settings);
records, WAV files and the store use it. A rerun finds the rows already committed to its
:class:`~steerlit.engines.results.ResultStore` under their content keys (``done``), skips the batches they
complete and regenerates the others with exactly the same composition, so its results equal an uninterrupted
run, and rows whose directions or settings changed are regenerated. (Codes do not depend on batch composition, thanks to per-row seeds; the decoded audio of a row can differ
in the last float bit between batch sizes, hence the fixed plan, and a resumed store keeps its batch size.)

:func:`plan_grid` does what both paths do before generating (batch size, settings check, done keys);
:func:`commit_batch` what they do after each batch; :func:`records_in_row_order` how they answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerlit.engines.grid import GridRow
from steerlit.engines.keys import content_keys
from steerlit.engines.results import ResultStore
from steerlit.engines.settings import GenerationSettings
from steerlit.models.adapter import MusicGenAdapter

DEFAULT_CPU_BATCH = 16
MAX_AUTO_BATCH = 256


def row_order(row: GridRow) -> tuple:
    """The sort key of rows in a plan."""
    return (row.prompt_index, row.prompt, row.seed, row.key)


def plan_batches(rows: Sequence[GridRow], batch_size: int) -> list[list[GridRow]]:
    """Deduplicate (by key), sort deterministically and chunk into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    unique = {r.key: r for r in rows}
    ordered = sorted(unique.values(), key=row_order)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def estimate_row_bytes(adapter, max_new_tokens: int, guidance_scale: float = 3.0, text_len: int = 64) -> int:
    """Rough peak memory of one row during generate + decode: self/cross-attention KV cache,
    per-step activations and logits (with the sampler's float64 noise), EnCodec decoding."""
    cfg = 2 if guidance_scale and guidance_scale > 1 else 1
    item = torch.finfo(adapter.dtype).bits // 8 if adapter.dtype.is_floating_point else 4
    h, layers, steps = adapter.hidden_size, adapter.num_layers, max_new_tokens + 1
    dec = adapter.model.config.decoder
    kv = cfg * layers * 2 * (steps + text_len) * h * item
    act = cfg * (8 * h + 2 * int(dec.ffn_dim)) * item * 4
    vocab = int(dec.vocab_size) + 1
    logits = cfg * adapter.num_codebooks * vocab * (4 * 6 + 8 * 3)
    frames = max(1, max_new_tokens - adapter.num_codebooks + 1)
    samples = int(frames / adapter.frame_rate * adapter.sample_rate)
    filters = int(getattr(adapter.model.config.audio_encoder, "num_filters", 64))
    decode = samples * filters * 4 * 4
    return int(1.2 * (kv + act + logits + decode))


def auto_batch_size(
    adapter,
    max_new_tokens: int,
    guidance_scale: float = 3.0,
    *,
    cpu_default: int = DEFAULT_CPU_BATCH,
    max_batch: int = MAX_AUTO_BATCH,
    fraction: float = 0.8,
) -> int:
    """On CUDA: ``fraction`` of free memory (``torch.cuda.mem_get_info``) over the per-row
    estimate, capped at ``max_batch``; elsewhere ``cpu_default``."""
    device = adapter.device
    if device.type != "cuda":
        return cpu_default
    free, _total = torch.cuda.mem_get_info(device)
    per_row = estimate_row_bytes(adapter, max_new_tokens, guidance_scale)
    return max(1, min(max_batch, int(free * fraction // per_row)))


def dtype_name(adapter) -> str:
    """The model's dtype as a settings value (``float32``, ``bfloat16``, ...)."""
    return str(adapter.dtype).removeprefix("torch.")


def store_settings(adapter, generation: GenerationSettings, *, orthogonalize: bool, batch_size: int) -> dict:
    """What a grid's store records about how its rows were generated (a rerun with other values is refused,
    except for ``batch_size``: see :meth:`ResultStore.ensure_settings`)."""
    return {
        "model_id": str(adapter.model_id),
        "dtype": dtype_name(adapter),
        "max_new_tokens": adapter.seconds_to_steps(generation.seconds),
        "guidance_scale": generation.guidance_scale,
        "temperature": generation.temperature,
        "top_k": generation.top_k,
        "orthogonalize": orthogonalize,
        "batch_size": batch_size,
        "engine": generation.engine,
    }


def resolve_batch_size(adapter, generation: GenerationSettings, store: ResultStore | None) -> int:
    """``generation.batch_size``; if None, the batch size the store was first run with (so a resumed plan is
    the original one), else one from free memory (:func:`auto_batch_size`)."""
    if generation.batch_size is not None:
        return generation.batch_size
    stored = store.settings().get("batch_size") if store is not None else None
    if stored is not None:
        return int(stored)
    return auto_batch_size(adapter, adapter.seconds_to_steps(generation.seconds), generation.guidance_scale)


@dataclass(frozen=True)
class GridPlan:
    """The batches of a grid (:func:`plan_batches`), each row's content key (``keys``: ``{row.key: content
    key}``, :func:`~steerlit.engines.keys.content_keys`) and the content keys already committed (``done``)."""

    batch_size: int
    batches: tuple[tuple[GridRow, ...], ...]
    keys: Mapping[str, str]
    done: frozenset[str]

    @classmethod
    def build(
        cls, rows: Sequence[GridRow], batch_size: int, keys: Mapping[str, str], done: Iterable[str] = ()
    ) -> GridPlan:
        batches = tuple(tuple(b) for b in plan_batches(rows, batch_size))
        missing = [r.key for b in batches for r in b if r.key not in keys]
        if missing:
            raise ValueError(f"No content key for {len(missing)} grid rows (e.g. {missing[0]}).")
        return cls(batch_size, batches, dict(keys), frozenset(done))

    @property
    def pending(self) -> list[int]:
        """Indices of the batches that still have a row to generate, in plan order."""
        return [i for i, b in enumerate(self.batches) if not all(self.keys[r.key] in self.done for r in b)]

    @property
    def total_rows(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def pending_rows(self) -> int:
        """Rows in pending batches (a pending batch is regenerated whole)."""
        return sum(len(self.batches[i]) for i in self.pending)


def plan_grid(
    adapter: MusicGenAdapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    store: ResultStore | None = None,
    orthogonalize: bool = False,
) -> GridPlan:
    """The plan of a grid run: batch size (:func:`resolve_batch_size`), each row's content key (from the
    vectors ``directions`` give it), the generation settings recorded in ``store`` (refusing a store made with
    other ones) and the rows it already holds."""
    batch_size = resolve_batch_size(adapter, generation, store)
    keys = content_keys(adapter, rows, directions, generation, orthogonalize=orthogonalize)
    if store is None:
        return GridPlan.build(rows, batch_size, keys)
    store.ensure_settings(
        store_settings(adapter, generation, orthogonalize=orthogonalize, batch_size=batch_size)
    )
    return GridPlan.build(rows, batch_size, keys, store.done_keys())


def commit_batch(
    store: ResultStore,
    records: Sequence[Mapping],
    audios: Sequence[np.ndarray | None],
    sample_rate: int,
    done: set[str],
) -> list[dict]:
    """Commit the records whose key is not in ``done`` (with their audio), add their keys to ``done`` and
    return them as stored (with ``wav``). Rows already committed keep their first record."""
    new = [(r, a) for r, a in zip(records, audios) if r["key"] not in done]
    stored = store.write_batch([r for r, _ in new], [a for _, a in new], sample_rate)
    done.update(r["key"] for r in stored)
    return stored


def records_in_row_order(
    rows: Sequence[GridRow], by_key: Mapping[str, dict], source: str, keys: Mapping[str, str]
) -> list[dict]:
    """One record per unique row, in the order of ``rows``; ``by_key``: records by content key, ``keys``:
    ``{row.key: content key}``. A row without a record is an error."""
    order = list(dict.fromkeys(keys[r.key] for r in rows))
    missing = [k for k in order if k not in by_key]
    if missing:
        raise RuntimeError(f"{len(missing)} grid rows are missing from {source}: {missing[:3]}.")
    return [by_key[k] for k in order]
