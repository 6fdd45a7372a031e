"""The grid engine: pack grid rows into batches, one batched ``generate`` per batch, resumable.

The batch plan is a pure function of the rows and the batch size (rows deduplicated by key and
sorted by ``(prompt_index, prompt, seed, key)``, then cut into chunks). A rerun after an
interruption skips the batches already committed to the :class:`ResultStore` and regenerates the
others with exactly the same composition, so its results are identical to an uninterrupted run.
(Codes do not depend on batch composition at all, thanks to per-row seeds; the decoded audio of
a row can differ in the last float bit between batch sizes, hence the fixed plan.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from steerlit.engines.grid import GridRow, row_steering
from steerlit.engines.results import ResultStore
from steerlit.engines.select import generate_with
from steerlit.engines.settings import GenerationSettings

DEFAULT_CPU_BATCH = 16
MAX_AUTO_BATCH = 256
MetricsFn = Callable[[np.ndarray, int], Mapping[str, float]]


def _row_order(row: GridRow):
    return (row.prompt_index, row.prompt, row.seed, row.key)


def plan_batches(rows: Sequence[GridRow], batch_size: int) -> list[list[GridRow]]:
    """Deduplicate (by key), sort deterministically and chunk into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    unique = {r.key: r for r in rows}
    ordered = sorted(unique.values(), key=_row_order)
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


def codes_digest(codes: torch.Tensor | np.ndarray) -> str:
    arr = np.ascontiguousarray(np.asarray(codes, dtype=np.int64))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def _record(row: GridRow, codes: torch.Tensor, audio: np.ndarray | None, sr: int, metrics_fn) -> dict:
    rec = row.flat()
    rec["codes_sha1"] = codes_digest(codes)
    rec["frames"] = int(codes.shape[-1])
    if metrics_fn is not None and audio is not None:
        for k, v in dict(metrics_fn(audio, sr)).items():
            rec[k if k not in rec else f"metric_{k}"] = (
                v.item() if isinstance(v, (np.generic, torch.Tensor)) else v
            )
    return rec


def generate_rows(
    adapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    metrics_fn: MetricsFn | None = None,
    orthogonalize: bool = False,
    decode_audio: bool = True,
) -> tuple[list[dict], list[np.ndarray | None], torch.Tensor]:
    """One batched ``generate`` for ``rows``: (records, audios (S,) float32, codes (B, K, F)).

    Each row's own seed is used (``generation.seeds`` are the grid's seed axis, already in the rows)."""
    rows = list(rows)
    steering = [row_steering(r, directions, adapter.num_layers, orthogonalize) for r in rows]
    out = generate_with(
        generation.engine,
        adapter,
        [r.prompt for r in rows],
        max_new_tokens=adapter.seconds_to_steps(generation.seconds),
        guidance_scale=generation.guidance_scale,
        seeds=[r.seed for r in rows],
        temperature=generation.temperature,
        top_k=generation.top_k,
        steering=steering if any(steering) else None,
        decode_audio=decode_audio,
    )
    audios = [out.audio[i].numpy() for i in range(len(rows))] if out.audio is not None else [None] * len(rows)
    records = [_record(r, out.codes[i], audios[i], out.sample_rate, metrics_fn) for i, r in enumerate(rows)]
    return records, audios, out.codes


def generation_settings(adapter, **kw) -> dict:
    return {"model_id": str(adapter.model_id), **kw}


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="row", desc=desc, dynamic_ncols=True)


def run_grid(
    adapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    store: ResultStore | None = None,
    metrics_fn: MetricsFn | None = None,
    orthogonalize: bool = False,
    progress: bool = True,
    keep_codes: bool = False,
) -> list[dict]:
    """Generate every row of a grid; return one record per unique row, in the order of ``rows``.

    ``directions``: ``{concept: DirectionSet}`` (or one DirectionSet; None if all rows are
    references). ``generation.batch_size=None`` picks one from free memory (:func:`auto_batch_size`).
    With a ``store``, batches already committed are skipped and each finished batch is committed
    at once (WAV files + JSONL lines). ``generation.engine``: ``hf`` or ``fast`` (see :mod:`steerlit.engines.select`).
    ``keep_codes`` adds ``codes`` (K, F) arrays to the returned
    records (never stored). Records: ``row.flat()`` + ``codes_sha1``, ``frames``, metrics, ``wav``.
    """
    max_new_tokens = adapter.seconds_to_steps(generation.seconds)
    batch_size = generation.batch_size
    if batch_size is None and store is not None:  # resume with the plan of the first run
        batch_size = store.settings().get("batch_size")
    if batch_size is None:
        batch_size = auto_batch_size(adapter, max_new_tokens, generation.guidance_scale)
    if store is not None:
        store.ensure_settings(
            generation_settings(
                adapter,
                max_new_tokens=max_new_tokens,
                guidance_scale=generation.guidance_scale,
                temperature=generation.temperature,
                top_k=generation.top_k,
                orthogonalize=orthogonalize,
                batch_size=batch_size,
                engine=generation.engine,
            )
        )
    batches = plan_batches(rows, batch_size)
    done = {r["key"]: r for r in store.rows()} if store is not None else {}
    results: dict[str, dict] = dict(done)
    total = sum(len(b) for b in batches)
    pending = [b for b in batches if not all(r.key in done for r in b)]
    bar = _progress(total, total - sum(len(b) for b in pending), progress, "grid")
    try:
        for batch in pending:
            records, audios, codes = generate_rows(
                adapter, batch, directions, generation, metrics_fn=metrics_fn, orthogonalize=orthogonalize
            )
            new = [(rec, a) for rec, a in zip(records, audios) if rec["key"] not in done]
            if store is not None:
                store.write_batch([rec for rec, _ in new], [a for _, a in new], adapter.sample_rate)
                for rec, _ in new:
                    rec["wav"] = f"samples/{rec['key']}.wav"
            for i, rec in enumerate(records):
                kept = results.setdefault(rec["key"], rec)  # a stored record wins over a regenerated one
                if keep_codes:
                    kept["codes"] = codes[i].numpy()
            bar.update(len(batch))
    finally:
        bar.close()
    order = list(dict.fromkeys(r.key for r in rows))
    return [results[k] for k in order]


def run_naive(
    adapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    progress: bool = False,
    **options,
) -> list[dict]:
    """The baseline: one ``generate`` call per row, no store (for benchmarks and cross-checks).

    ``options``: the keyword options of :func:`generate_rows` (``metrics_fn``, ``orthogonalize``)."""
    out = []
    bar = _progress(len(rows), 0, progress, "naive")
    for row in rows:
        out.extend(generate_rows(adapter, [row], directions, generation, **options)[0])
        bar.update(1)
    bar.close()
    return out


def audio_seconds(adapter, max_new_tokens: int) -> float:
    """Seconds of audio one row of ``max_new_tokens`` steps yields."""
    return max(0, max_new_tokens - adapter.num_codebooks + 1) / adapter.frame_rate
