"""Grids across several processes (DDP) inside a Lightning ``Trainer.predict`` run.

Why a LightningModule with ``predict_step`` (and not a bare ``torch.distributed`` helper): the
Trainer already owns process launching (spawn/popen, CPU gloo or CUDA NCCL, one device per
rank), rank/world bookkeeping and progress; steerlit's other loops (activation caching) run the
same way, so ``devices=``/``strategy=`` mean the same everywhere. The collectives themselves are
plain ``torch.distributed.all_gather_object`` calls.

How it works:

* every rank builds the same batch plan (:func:`steerlit.engines.runner.plan_batches`) with the
  batch size and the done keys broadcast from rank 0, so batches, and hence results, are
  identical to a one-process :func:`run_grid` with the same batch size;
* the dataset is the indices of the pending batches, sharded by a padded ``DistributedSampler``
  (no shuffling): every rank runs the same number of ``predict_step`` calls, so a per-step
  ``all_gather_object`` cannot deadlock; a padded (repeated) batch is generated twice and
  dropped on rank 0;
* after each step rank 0 receives every rank's records and audio and commits them to the
  :class:`ResultStore` (the only writer), so an interrupted DDP sweep resumes like a local one;
* the model is loaded in ``setup()`` on each rank's device, never pickled (``ddp_spawn`` cannot
  pickle EnCodec's weight-norm parametrisations), and is kept out of the module tree so Lightning
  neither moves nor broadcasts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from steerlit.engines.grid import GridRow
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import (
    MetricsFn,
    auto_batch_size,
    generate_rows,
    generation_settings,
    plan_batches,
)
from steerlit.engines.settings import GenerationSettings
from steerlit.models.loading import load_adapter
from steerlit.models.settings import ModelSettings


class _Holder:
    """Keeps the loaded adapter out of ``nn.Module`` registration (no moving, no state sync)."""

    def __init__(self, value=None):
        self.value = value


def _first(batch):
    return batch[0]


class GridPredictor(pl.LightningModule):
    """Generates grid batches in ``predict_step``; rank 0 gathers and writes to ``out_dir``."""

    def __init__(
        self,
        model: ModelSettings,
        rows: Sequence[GridRow],
        directions,
        generation: GenerationSettings,
        *,
        out_dir: str | Path,
        metrics_fn: MetricsFn | None = None,
        orthogonalize: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model_settings, self.generation = model, generation
        self.rows = list(rows)
        self.directions = directions
        self.out_dir = Path(out_dir)
        self.metrics_fn, self.orthogonalize = metrics_fn, orthogonalize
        self._adapter = _Holder()
        self.plan: list[list[GridRow]] = []
        self.pending: list[int] = []
        self.done: set[str] = set()

    @property
    def adapter(self):
        return self._adapter.value

    def setup(self, stage: str) -> None:
        if self.adapter is None:  # every model setting (dtype, hub cache, attention) on this rank's device
            self._adapter.value = load_adapter(self.model_settings, device=self.trainer.strategy.root_device)

    def _world(self) -> tuple[int, int]:
        return self.trainer.world_size, self.trainer.global_rank

    def predict_dataloader(self) -> DataLoader:
        world, rank = self._world()
        plan_info = None
        if rank == 0:
            store = ResultStore(self.out_dir)
            g = self.generation
            max_new_tokens = self.adapter.seconds_to_steps(g.seconds)
            batch_size = g.batch_size or store.settings().get("batch_size")
            batch_size = batch_size or auto_batch_size(self.adapter, max_new_tokens, g.guidance_scale)
            store.ensure_settings(
                generation_settings(
                    self.adapter,
                    max_new_tokens=max_new_tokens,
                    guidance_scale=g.guidance_scale,
                    temperature=g.temperature,
                    top_k=g.top_k,
                    orthogonalize=self.orthogonalize,
                    batch_size=batch_size,
                    engine=g.engine,
                )
            )
            plan_info = (batch_size, sorted(store.done_keys()))
        plan_info = self.trainer.strategy.broadcast(plan_info, src=0)
        batch_size, done = plan_info
        self.done = set(done)
        self.plan = plan_batches(self.rows, batch_size)
        self.pending = [i for i, b in enumerate(self.plan) if not all(r.key in self.done for r in b)]
        sampler = DistributedSampler(
            self.pending, num_replicas=world, rank=rank, shuffle=False, drop_last=False
        )
        return DataLoader(self.pending, batch_size=1, sampler=sampler, collate_fn=_first, num_workers=0)

    def predict_step(self, batch_index: int, *args) -> list[dict]:
        batch = self.plan[int(batch_index)]
        records, audios, _ = generate_rows(
            self.adapter,
            batch,
            self.directions,
            self.generation,
            metrics_fn=self.metrics_fn,
            orthogonalize=self.orthogonalize,
        )
        payload = (records, audios)
        world, rank = self._world()
        if world > 1 and dist.is_available() and dist.is_initialized():
            gathered = [None] * world
            dist.all_gather_object(gathered, payload)
        else:
            gathered = [payload]
        if rank != 0:
            return []
        store = ResultStore(self.out_dir)
        written = []
        for recs, auds in gathered:
            new = [(r, a) for r, a in zip(recs, auds) if r["key"] not in self.done]
            store.write_batch([r for r, _ in new], [a for _, a in new], self.adapter.sample_rate)
            for r, _ in new:
                self.done.add(r["key"])
                written.append(r)
        return written

    def configure_optimizers(self):
        return None


def run_grid_distributed(
    model: ModelSettings,
    rows: Sequence[GridRow],
    directions: Mapping | None,
    generation: GenerationSettings,
    *,
    out_dir: str | Path,
    devices: int | str = 2,
    accelerator: str = "cpu",
    strategy: str | None = None,
    metrics_fn: MetricsFn | None = None,
    orthogonalize: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Run a grid over ``devices`` processes; return the stored records in the order of ``rows``.

    ``model``: the full model settings, loaded on each rank in ``setup()`` (dtype, hub cache and attention
    implementation included). ``strategy`` defaults to ``ddp_fork`` on CPU and ``ddp_spawn`` on GPUs (CUDA cannot
    be forked once initialised) for several devices, ``auto`` for one; both work from scripts, notebooks and
    tests, and give identical results (spawn pickles the module: ``metrics_fn`` must be a module-level function).
    ``ddp`` (popen: re-runs the script per rank) suits multi-GPU CLI runs.
    """
    n = devices if isinstance(devices, int) else None
    if strategy is None and n == 1:
        strategy = "auto"
    elif strategy is None:  # fork skips re-importing torch/transformers per rank (25 s vs 80 s in tests)
        strategy = "ddp_fork" if accelerator == "cpu" else "ddp_spawn"
    module = GridPredictor(
        model,
        rows,
        directions,
        generation,
        out_dir=out_dir,
        metrics_fn=metrics_fn,
        orthogonalize=orthogonalize,
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        inference_mode=True,
    )
    trainer.predict(module, return_predictions=False)
    if not trainer.is_global_zero:
        return []
    stored = {r["key"]: r for r in ResultStore(out_dir).rows()}
    order = list(dict.fromkeys(r.key for r in rows))
    missing = [k for k in order if k not in stored]
    if missing:
        raise RuntimeError(
            f"{len(missing)} grid rows are missing from {out_dir} after the DDP run: {missing[:3]}."
        )
    return [stored[k] for k in order]


__all__ = ["GridPredictor", "run_grid_distributed"]
