"""Grids across several processes (DDP) inside a Lightning ``Trainer.predict`` run.

Why a LightningModule with ``predict_step`` (and not a bare ``torch.distributed`` helper): the
Trainer already owns process launching (spawn/popen, CPU gloo or CUDA NCCL, one device per
rank), rank/world bookkeeping and progress; steerlit's other loops (activation caching) run the
same way, so ``devices=``/``strategy=`` mean the same everywhere. The collectives themselves are
plain ``torch.distributed.all_gather_object`` calls.

How it works:

* rank 0 plans the grid exactly as the local runner does (:func:`steerlit.engines.plan.plan_grid`: batch
  size, content keys, settings check, done keys) and broadcasts the batch size, the content keys and the done
  keys; every rank builds the same :class:`~steerlit.engines.plan.GridPlan` from them, so batches, and hence results, are identical to a
  one-process :func:`~steerlit.engines.runner.run_grid` with the same batch size;
* every rank loads the model from the same :class:`~steerlit.models.settings.ModelSettings`; the ranks
  check that they all hold the same model id and dtype before planning;
* the dataset is the indices of the pending batches, sharded by a padded ``DistributedSampler``
  (no shuffling): every rank runs the same number of ``predict_step`` calls, so a per-step
  ``all_gather_object`` cannot deadlock; a padded (repeated) batch is generated twice and
  dropped on rank 0;
* each rank measures its clips through a :class:`~steerlit.metrics.pool.ClipMeasurer` of its own, built from
  a :class:`~steerlit.metrics.pool.MeasurerSpec` (its spawned workers, as in one process: a native crash in a
  metric gives that clip ``nan`` values and a reason after a retry, and never takes the rank down), while the
  rank generates its next batch; or, with ``metrics_fn`` alone, in the rank itself;
* after each step rank 0 receives every rank's records and audio (those of the step before, when measuring
  overlaps) and commits them to the :class:`ResultStore` (the only writer,
  :func:`~steerlit.engines.plan.commit_batch`), so an interrupted DDP sweep resumes like a local one;
* the model is loaded in ``setup()`` on each rank's device, never pickled (``ddp_spawn`` cannot
  pickle EnCodec's weight-norm parametrisations), and is kept out of the module tree so Lightning
  neither moves nor broadcasts it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from steerlit.engines.grid import GridRow
from steerlit.engines.plan import GridPlan, commit_batch, dtype_name, plan_grid, records_in_row_order
from steerlit.engines.results import ResultStore
from steerlit.engines.runner import MetricsFn, add_measurements, generate_rows, submit_clips
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_write_json
from steerlit.metrics.pool import ClipMeasurer, MeasurerSpec
from steerlit.models.loading import load_adapter
from steerlit.models.settings import ModelSettings
from steerlit.runtime import quiet_lightning

KEYS_FILE = "grid_keys.json"  # {row.key: content key} of the last DDP plan, written by rank 0


class _Holder:
    """Keeps the loaded adapter out of ``nn.Module`` registration (no moving, no state sync)."""

    def __init__(self, value=None):
        self.value = value


def _first(batch):
    return batch[0]


def check_same_model(identities: Sequence[Mapping]) -> None:
    """Refuse ranks that loaded different models (ids or dtypes): their rows would not belong to one grid."""
    if any(dict(i) != dict(identities[0]) for i in identities):
        raise RuntimeError(
            f"The DDP ranks loaded different models {list(identities)}; give every rank the same model settings."
        )


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
        measurer: MeasurerSpec | None = None,
        orthogonalize: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model_settings, self.generation = model, generation
        self.rows = list(rows)
        self.directions = directions
        self.out_dir = Path(out_dir)
        self.metrics_fn, self.orthogonalize = metrics_fn, orthogonalize
        self.measurer_spec = measurer
        self._adapter = _Holder()
        self._measurer = _Holder()  # this rank's ClipMeasurer, started at its first clip
        self._measuring = _Holder()  # (index, records, audios) of the batch whose clips are being measured
        self.plan: GridPlan | None = None
        self.done: set[str] = set()

    @property
    def adapter(self):
        return self._adapter.value

    def setup(self, stage: str) -> None:
        if self.adapter is None:  # every model setting (dtype, hub cache, attention) on this rank's device
            self._adapter.value = load_adapter(self.model_settings, device=self.trainer.strategy.root_device)

    def clip_measurer(self) -> ClipMeasurer:
        """This rank's measurer (its worker processes start once, at the first batch)."""
        if self._measurer.value is None:
            self._measurer.value = self.measurer_spec.open()
        return self._measurer.value

    def close_measurer(self) -> None:
        if self._measurer.value is not None:
            self._measurer.value.close()
            self._measurer.value = None

    def on_predict_end(self) -> None:
        """Commit the last measured batch (every rank has one pending: the sampler pads the shards evenly)."""
        if self._measuring.value is not None:
            last, self._measuring.value = self._measuring.value, None
            self._commit_measured(last)
        self.close_measurer()

    def teardown(self, stage: str) -> None:
        self.close_measurer()

    def _world(self) -> tuple[int, int]:
        return self.trainer.world_size, self.trainer.global_rank

    def _gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (``[obj]`` in one process)."""
        world, _ = self._world()
        if world > 1 and dist.is_available() and dist.is_initialized():
            gathered = [None] * world
            dist.all_gather_object(gathered, obj)
            return gathered
        return [obj]

    def predict_dataloader(self) -> DataLoader:
        world, rank = self._world()
        check_same_model(
            self._gather({"model_id": str(self.adapter.model_id), "dtype": dtype_name(self.adapter)})
        )
        plan_info = None
        if rank == 0:
            store = ResultStore(self.out_dir)
            plan = plan_grid(
                self.adapter,
                self.rows,
                self.directions,
                self.generation,
                store=store,
                orthogonalize=self.orthogonalize,
            )
            plan_info = (plan.batch_size, dict(plan.keys), sorted(plan.done))
            atomic_write_json(self.out_dir / KEYS_FILE, plan_info[1])  # for the launching process
        batch_size, keys, done = self.trainer.strategy.broadcast(plan_info, src=0)
        self.plan = GridPlan.build(self.rows, batch_size, keys, done)
        self.done = set(done)
        pending = self.plan.pending
        sampler = DistributedSampler(pending, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        return DataLoader(pending, batch_size=1, sampler=sampler, collate_fn=_first, num_workers=0)

    def predict_step(self, batch_index: int, *args) -> list[dict]:
        """Generate batch ``batch_index``; with a measurer, queue its clips and commit the previous batch,
        whose clips the workers measured while this one generated (the last one commits in ``on_predict_end``)."""
        index = int(batch_index)
        records, audios, _ = generate_rows(
            self.adapter,
            self.plan.batches[index],
            self.directions,
            self.generation,
            metrics_fn=self.metrics_fn if self.measurer_spec is None else None,
            orthogonalize=self.orthogonalize,
            keys=self.plan.keys,
        )
        if self.measurer_spec is None:
            return self._commit(records, audios)
        submit_clips(self.clip_measurer(), (index,), audios, self.adapter.sample_rate)
        previous, self._measuring.value = self._measuring.value, (index, records, audios)
        return self._commit_measured(previous) if previous is not None else []

    def _commit_measured(self, batch: tuple[int, list[dict], list]) -> list[dict]:
        index, records, audios = batch
        add_measurements(self.clip_measurer(), (index,), records, audios)
        return self._commit(records, audios)

    def _commit(self, records: list[dict], audios: list) -> list[dict]:
        """Gather every rank's batch (a collective: each rank calls it once per step) and commit on rank 0."""
        gathered = self._gather((records, audios))
        if self._world()[1] != 0:
            return []
        store = ResultStore(self.out_dir)
        written = []
        for recs, auds in gathered:  # a padded (repeated) batch is committed once
            written.extend(commit_batch(store, recs, auds, self.adapter.sample_rate, self.done))
        return written

    def configure_optimizers(self):
        return None


def default_strategy(devices: int | str, accelerator: str) -> str:
    """``auto`` for one device; several: ``ddp_fork`` on CPU (no re-import of torch/transformers per rank:
    25 s vs 80 s in tests), ``ddp_spawn`` on GPUs (CUDA cannot be forked once initialised)."""
    if devices == 1:
        return "auto"
    return "ddp_fork" if accelerator == "cpu" else "ddp_spawn"


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
    measurer: MeasurerSpec | None = None,
    orthogonalize: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Run a grid over ``devices`` processes; return the stored records in the order of ``rows`` (on rank 0;
    other ranks return ``[]``).

    ``model``: the full model settings, loaded on each rank in ``setup()`` (dtype, hub cache and attention
    implementation included). ``strategy`` defaults to :func:`default_strategy`; fork and spawn both work
    from scripts, notebooks and tests, and give identical results (spawn pickles the module: ``metrics_fn``
    must be a module-level function). ``ddp`` (popen: re-runs the script per rank) suits multi-GPU CLI runs.
    ``measurer``: each rank measures its clips in a ClipMeasurer of its own (``workers`` spawned processes, or
    in the rank with ``workers=0``), as :func:`~steerlit.engines.runner.run_grid` does with one; else
    ``metrics_fn`` measures them in the rank. The values are the same.
    """
    module = GridPredictor(
        model,
        rows,
        directions,
        generation,
        out_dir=out_dir,
        metrics_fn=metrics_fn,
        measurer=measurer,
        orthogonalize=orthogonalize,
    )
    launch = {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy or default_strategy(devices, accelerator),
    }
    quiet = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    quiet_lightning()
    trainer = pl.Trainer(
        **launch, **quiet, enable_progress_bar=progress, use_distributed_sampler=False, inference_mode=True
    )
    trainer.predict(module, return_predictions=False)
    if not trainer.is_global_zero:
        return []
    keys = json.loads(
        (Path(out_dir) / KEYS_FILE).read_text()
    )  # rank 0's plan (the ranks may be other processes)
    stored = {r["key"]: r for r in ResultStore(out_dir).rows()}
    return records_in_row_order(rows, stored, f"{out_dir} after the DDP run", keys)


__all__ = ["GridPredictor", "check_same_model", "default_strategy", "run_grid_distributed"]
