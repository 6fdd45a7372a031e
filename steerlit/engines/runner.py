"""The local grid runner: one batched :func:`~steerlit.engines.select.generate` per planned batch, resumable.

The batch plan, the settings check and the resume state come from :mod:`steerlit.engines.plan`, shared with
the DDP grid (:mod:`steerlit.engines.distributed`): a one-process and a several-process run of the same grid
give the same records, and a killed and rerun grid equals an uninterrupted one.

Records: ``key`` (the row's content key, :mod:`steerlit.engines.keys`), ``row_key`` (:attr:`GridRow.key`),
the other :meth:`GridRow.flat` columns, ``codes_sha1``, ``frames``, ``degenerate`` (None, or why the row's
output is unusable: :func:`degenerate_reason`; such rows are still stored, and are to be left out of
summaries), metrics and, once stored, ``wav`` with its checksums (:mod:`steerlit.engines.results`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlit.engines.grid import GridRow, row_steering
from steerlit.engines.keys import content_keys
from steerlit.engines.plan import commit_batch, plan_grid, records_in_row_order
from steerlit.engines.results import ResultStore
from steerlit.engines.select import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.metrics.pool import ClipMeasurer

log = logging.getLogger(__name__)
MetricsFn = Callable[[np.ndarray, int], Mapping[str, float]]
DEGENERATE = "degenerate"  # the record field that flags an unusable row (None when the row is fine)


def codes_digest(codes: torch.Tensor | np.ndarray) -> str:
    """The ``codes_sha1`` of a row: the first 16 hex digits of the sha1 of its int64 codes (K, F)."""
    arr = np.ascontiguousarray(np.asarray(codes, dtype=np.int64))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def degenerate_reason(codes: torch.Tensor | np.ndarray, audio: np.ndarray | None) -> str | None:
    """Why a row's output is unusable, or None: audio with NaN/inf, or codes (K, F) that are all one value
    (what non-finite hidden states give, e.g. at α ≥ ~1e38, where every code becomes 0)."""
    if audio is not None and not np.isfinite(audio).all():
        return "non-finite audio (NaN or inf)"
    flat = np.asarray(codes).reshape(-1)
    if flat.size > 1 and (flat == flat[0]).all():
        return f"constant codes (all {int(flat[0])})"
    return None


def add_metrics(record: dict, values: Mapping) -> None:
    """A clip's measurements into its record (a name that is already a record field gets a ``metric_`` prefix)."""
    for k, v in dict(values).items():
        record[k if k not in record else f"metric_{k}"] = (
            v.item() if isinstance(v, (np.generic, torch.Tensor)) else v
        )


def measurable(audio: np.ndarray | None) -> bool:
    """Whether a clip is measured: it has audio, all of it finite."""
    return audio is not None and bool(np.isfinite(audio).all())


def _record(
    row: GridRow, key: str, codes: torch.Tensor, audio: np.ndarray | None, sr: int, metrics_fn
) -> dict:
    rec = {"key": key, "row_key": row.key, **{k: v for k, v in row.flat().items() if k != "key"}}
    rec["codes_sha1"] = codes_digest(codes)
    rec["frames"] = int(codes.shape[-1])
    rec[DEGENERATE] = degenerate_reason(codes, audio)
    if metrics_fn is not None and measurable(audio):
        add_metrics(rec, metrics_fn(audio, sr))
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
    keys: Mapping[str, str] | None = None,
) -> tuple[list[dict], list[np.ndarray | None], torch.Tensor]:
    """One batched ``generate`` for ``rows``: (records, audios (S,) float32, codes (B, K, F)).

    Each row's own seed is used (``generation.seeds`` are the grid's seed axis, already in the rows).
    ``keys``: ``{row.key: content key}`` (from the plan; computed here when None). A row with non-finite audio
    is not measured."""
    rows = list(rows)
    if keys is None:
        keys = content_keys(adapter, rows, directions, generation, orthogonalize=orthogonalize)
    steering = [row_steering(r, directions, adapter.num_layers, orthogonalize) for r in rows]
    out = generate(
        adapter,
        [r.prompt for r in rows],
        generation,
        seeds=[r.seed for r in rows],
        steering=steering if any(steering) else None,
        decode_audio=decode_audio,
    )
    audios = [out.audio[i].numpy() for i in range(len(rows))] if out.audio is not None else [None] * len(rows)
    records = [
        _record(r, keys[r.key], out.codes[i], audios[i], out.sample_rate, metrics_fn)
        for i, r in enumerate(rows)
    ]
    return records, audios, out.codes


def submit_clips(measurer: ClipMeasurer, tag: tuple, audios: Sequence[np.ndarray | None], sr: int) -> None:
    """Queue a batch's measurable clips in ``measurer``, keyed ``(*tag, i)`` (``tag`` names the batch)."""
    for i, audio in enumerate(audios):
        if measurable(audio):
            measurer.submit((*tag, i), audio, sr)


def add_measurements(measurer: ClipMeasurer, tag: tuple, records: Sequence[dict], audios) -> None:
    """The values of a batch's clips queued by :func:`submit_clips` into its records (waits for them)."""
    for i, (rec, audio) in enumerate(zip(records, audios)):
        if measurable(audio):
            add_metrics(rec, measurer.result((*tag, i)))


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A row-counting tqdm bar (disabled unless ``enabled``)."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="row", desc=desc, dynamic_ncols=True)


class BatchCommitter:
    """What :func:`run_grid` does with each generated batch: measure its clips (in ``measurer``'s workers,
    while the next batch generates), commit it to the store, and keep its records for the answer."""

    def __init__(self, store, results: dict, done: set, sample_rate: int, measurer, keep_codes: bool, bar):
        self.store, self.results, self.done, self.sample_rate = store, results, done, sample_rate
        self.measurer, self.keep_codes, self.bar = measurer, keep_codes, bar
        self.token = uuid.uuid4().hex  # this grid's clip keys in a measurer shared by several grids

    def submit(self, index: int, audios) -> None:
        """Queue the batch's measurable clips in the measurer (a no-op without one)."""
        if self.measurer is not None:
            submit_clips(self.measurer, (self.token, index), audios, self.sample_rate)

    def commit(self, index: int, records, audios, codes) -> None:
        """Add the batch's measurements (waiting for them), commit it and keep its records."""
        if self.measurer is not None:
            add_measurements(self.measurer, (self.token, index), records, audios)
        if self.store is not None:
            stored = {
                r["key"]: r for r in commit_batch(self.store, records, audios, self.sample_rate, self.done)
            }
            records = [stored.get(r["key"], r) for r in records]
        for i, rec in enumerate(records):
            kept = self.results.setdefault(rec["key"], rec)  # a stored record wins over a regenerated one
            if self.keep_codes:
                kept["codes"] = codes[i].numpy()
        self.bar.update(len(records))


def run_grid(
    adapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    store: ResultStore | None = None,
    metrics_fn: MetricsFn | None = None,
    measurer: ClipMeasurer | None = None,
    orthogonalize: bool = False,
    progress: bool = True,
    keep_codes: bool = False,
) -> list[dict]:
    """Generate every row of a grid; return one record per unique row, in the order of ``rows``.

    ``directions``: ``{concept: DirectionSet}`` (or one DirectionSet; None if all rows are
    references). ``generation.batch_size=None`` picks one from free memory (:mod:`steerlit.engines.plan`).
    With a ``store``, batches already committed are skipped and each finished batch is committed
    at once (WAV files + JSONL lines). ``generation.engine``: ``hf`` or ``fast`` (see :mod:`steerlit.engines.select`).
    Clips are measured by ``measurer`` (:class:`~steerlit.metrics.pool.ClipMeasurer`: in worker processes,
    while the next batch generates; a clip whose metric crashes natively gets ``nan`` values and a
    ``metric_error``), else by ``metrics_fn`` in this process; the values are the same.
    ``keep_codes`` adds ``codes`` (K, F) arrays to the returned records (never stored). Records: see the
    module docstring; rows flagged ``degenerate`` are counted in a logged warning.
    """
    plan = plan_grid(adapter, rows, directions, generation, store=store, orthogonalize=orthogonalize)
    wanted = set(plan.keys.values())
    results = {r["key"]: r for r in store.rows() if r["key"] in wanted} if store is not None else {}
    bar = progress_bar(plan.total_rows, plan.total_rows - plan.pending_rows, progress, "grid")
    committer = BatchCommitter(store, results, set(plan.done), adapter.sample_rate, measurer, keep_codes, bar)
    waiting = None  # the last generated batch, committed once the next one is generated
    try:
        for index in plan.pending:
            records, audios, codes = generate_rows(
                adapter,
                plan.batches[index],
                directions,
                generation,
                metrics_fn=None if measurer is not None else metrics_fn,
                orthogonalize=orthogonalize,
                keys=plan.keys,
            )
            committer.submit(index, audios)
            if waiting is not None:
                committer.commit(*waiting)
            waiting = (index, records, audios, codes)
        if waiting is not None:
            committer.commit(*waiting)
    finally:
        bar.close()
    out = records_in_row_order(rows, results, "the grid results", plan.keys)
    warn_degenerate(out)
    return out


def degenerate_rows(records: Sequence[Mapping]) -> list[Mapping]:
    """The records flagged ``degenerate`` (to leave out of summaries, and count)."""
    return [r for r in records if r.get(DEGENERATE)]


def warn_degenerate(records: Sequence[Mapping]) -> None:
    bad = degenerate_rows(records)
    if bad:
        reasons = sorted({str(r[DEGENERATE]) for r in bad})
        log.warning(
            "%d of %d grid rows are degenerate (%s), e.g. row %s; they are flagged %r in their records.",
            len(bad),
            len(records),
            "; ".join(reasons[:3]),
            bad[0]["key"],
            DEGENERATE,
        )


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
    bar = progress_bar(len(rows), 0, progress, "naive")
    for row in rows:
        out.extend(generate_rows(adapter, [row], directions, generation, **options)[0])
        bar.update(1)
    bar.close()
    return out


def audio_seconds(adapter, max_new_tokens: int) -> float:
    """Seconds of audio one row of ``max_new_tokens`` steps yields (the inverse of ``adapter.seconds_to_steps``)."""
    return max(0, max_new_tokens - adapter.num_codebooks + 1) / adapter.frame_rate
