"""Activation caching as a Lightning predict loop (``Trainer.predict``), resumable and DDP-aware.

:class:`ActivationCacheModule` records every requested site in one pass per batch (= one shard of the
:class:`~steerlit.data.datamodule.PromptDataModule`) and writes ``<run>/activations/`` (layout in
:mod:`steerlit.directions.cache`). ``ExtractSettings.source``:

* ``prompt`` -- text only: a teacher-forced forward over the decoder's BOS token (the prefill step of
  generation, conditional branch), reduction ``first``: (B, H) per site.
* ``generate`` -- a short greedy generation of ``gen_steps`` tokens (so a row does not depend on random
  draws), reduced over decoding steps with ``first``/``mean``/``last``; the conditional CFG half is kept.

Resuming: shards that read back complete (same content key and ids, tensors matching their checksum, not
marked ``partial``; see :mod:`steerlit.directions.cache`) are not recomputed -- they are only read to add them
to the streaming class sums. The content key covers the model's weights
(:func:`~steerlit.models.fingerprint.weights_fingerprint`) and each example's text, so a retrained checkpoint
recomputes every shard and an edited prompt exactly the shard it is in. Under DDP each rank writes its own
shards; class sums (:class:`~steerlit.directions.diffmean.ClassSums`, per split) are all-reduced at
the end, and rank 0 writes ``class_sums.safetensors`` and the final ``index.json``. Ranks that load the
model themselves (a :class:`~steerlit.models.settings.ModelSettings` instead of a loaded adapter; needed
with spawned ranks) load it with every setting, on their own device.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import lightning as L
import torch
import torch.distributed as dist

from steerlit.data.datamodule import PromptDataModule
from steerlit.data.settings import ProbeSettings
from steerlit.directions import cache as C
from steerlit.directions.ddp import loop_strategy
from steerlit.directions.diffmean import ClassSums, save_class_sums
from steerlit.intervene.record import ActivationRecorder, PooledReduction
from steerlit.models.adapter import MusicGenAdapter
from steerlit.models.fingerprint import weights_fingerprint, weights_rewritten_unchanged
from steerlit.models.loading import load_adapter, resolve_dtype
from steerlit.models.settings import ModelSettings
from steerlit.runtime import TrainerSettings, quiet_lightning

if TYPE_CHECKING:  # settings.py imports this module's Source choices
    from steerlit.directions.settings import ExtractSettings

log = logging.getLogger(__name__)
Source = Literal["prompt", "generate"]
SOURCES: tuple[Source, ...] = get_args(Source)
POOLED_REDUCTIONS: tuple[PooledReduction, ...] = get_args(PooledReduction)


def check_extract_settings(settings: ExtractSettings) -> None:
    """One clear error for a source or position a cache cannot use."""
    if settings.source not in SOURCES:
        raise ValueError(f"Unknown extract.source {settings.source!r}; use one of {SOURCES}.")
    if settings.source == "prompt" and settings.position != "first":
        raise ValueError(
            "extract.source=prompt records the single prefill position: use extract.position=first "
            "(or extract.source=generate to average over decoding steps)."
        )
    if settings.position not in POOLED_REDUCTIONS:
        raise ValueError(f"extract.position must be one of {POOLED_REDUCTIONS}, got {settings.position!r}.")


@torch.no_grad()
def prefill(adapter: MusicGenAdapter, batch: dict) -> None:
    """The prefill step of generation: one decoder forward over BOS, conditioned on the batch's texts."""
    if "input_ids" in batch:
        inputs = {k: batch[k].to(adapter.device) for k in ("input_ids", "attention_mask")}
    else:
        inputs = adapter.tokenize(batch["texts"])
    bos = adapter.model.generation_config.decoder_start_token_id
    rows = len(batch["texts"]) * adapter.num_codebooks
    dec = torch.full((rows, 1), bos, dtype=torch.long, device=adapter.device)
    adapter.model(**inputs, decoder_input_ids=dec)


def greedy_generation(
    adapter: MusicGenAdapter, texts: Sequence[str], steps: int, guidance_scale: float
) -> None:
    """``steps`` greedy decoding steps per text with classifier-free guidance (HF ``generate``)."""
    with torch.inference_mode():
        adapter.model.generate(
            **adapter.tokenize(list(texts)),
            max_new_tokens=steps,
            do_sample=False,
            guidance_scale=guidance_scale,
        )


class ActivationCacheModule(L.LightningModule):
    """Records sites for each predict batch and writes the activation cache of ``run_dir``.

    ``model``: a loaded :class:`~steerlit.models.adapter.MusicGenAdapter` (shared with forked DDP ranks) or
    :class:`~steerlit.models.settings.ModelSettings`, loaded in ``setup()`` on each rank's device with every
    setting (needed with spawned ranks). ``settings``: sites, source, position, generation and storage dtype.
    """

    def __init__(
        self, model: MusicGenAdapter | ModelSettings, run_dir: str | Path, settings: ExtractSettings
    ):
        super().__init__()
        self.automatic_optimization = False
        check_extract_settings(settings)
        if not isinstance(model, MusicGenAdapter | ModelSettings):
            raise TypeError(
                f"ActivationCacheModule needs a loaded MusicGenAdapter or ModelSettings, got {type(model).__name__}."
            )
        self.run_dir, self.settings = Path(run_dir), settings
        self.store_dtype = resolve_dtype(settings.dtype) or torch.float32
        self.model_settings = model if isinstance(model, ModelSettings) else None
        self.adapter: MusicGenAdapter | None = None
        self._site_names: list[str] | None = None
        if isinstance(model, MusicGenAdapter):
            self.attach(model)

    def attach(self, adapter: MusicGenAdapter) -> None:
        self.adapter = adapter
        self.musicgen = adapter.model  # registered so Lightning moves it to the device
        # Taken now, before the strategy's set-up touches the parameters in place (a DDP broadcast bumps their
        # versions, after which the fingerprint would be the parameters' instead of the loaded files').
        self.weights_fingerprint = weights_fingerprint(adapter)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.adapter is None:
            self.attach(load_adapter(self.model_settings, device=self.trainer.strategy.root_device))

    @property
    def sites(self) -> list[str]:
        """Site names: ``settings.site_kind`` at ``settings.layers`` (every layer when None), validated."""
        if self._site_names is None:
            layers = self.settings.layers
            layers = range(self.adapter.num_layers) if layers is None else layers
            names = [f"{self.settings.site_kind}.{i}" for i in layers]
            self._site_names = [s.name for s in self.adapter.parse_sites(names)]
        return self._site_names

    def configure_optimizers(self):
        return None

    def cache_config(self, data_config: dict | None = None) -> dict:
        """Everything but the examples that determines the cached values (hashed into the configuration
        fingerprint)."""
        generated = self.settings.source == "generate"
        return {
            "version": C.CACHE_VERSION,
            "model_id": self.adapter.model_id,
            "weights_fingerprint": self.weights_fingerprint,
            "model_dtype": str(self.adapter.dtype).removeprefix("torch."),
            "hidden_size": self.adapter.hidden_size,
            "num_layers": self.adapter.num_layers,
            "sites": self.sites,
            "source": self.settings.source,
            "reduction": self.settings.position,
            "gen_steps": self.settings.gen_steps if generated else 0,
            "guidance_scale": float(self.settings.guidance_scale) if generated else 1.0,
            "gen_seed": None,  # greedy generation (kept in the fingerprint of older caches)
            "half": "cond",
            "dtype": str(self.store_dtype).replace("torch.", ""),
            **(data_config or {}),
        }

    def _dataset(self):
        loaders = self.trainer.predict_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = loader.dataset
        if not hasattr(dataset, "shards"):
            raise TypeError(
                "ActivationCacheModule needs PromptDataModule.predict_dataloader() (a ShardDataset)."
            )
        return dataset

    # ------------------------------------------------------------------ predict loop
    def on_predict_start(self) -> None:
        dataset = self._dataset()
        dm = getattr(self.trainer, "datamodule", None)
        self.cache_cfg = self.cache_config(dm.config() if hasattr(dm, "config") else None)
        self.config_fp = C.fingerprint(self.cache_cfg)
        self.shard_keys = {s[0].shard: C.shard_key(self.config_fp, s) for s in dataset.shards}
        self.fp = C.content_fingerprint(self.config_fp, self.shard_keys.values())
        strategy = self.trainer.strategy
        complete = None
        if self.trainer.is_global_zero:
            complete = self._scan(dataset.shards)
            self._write_index(
                dataset.shards, {s[0].shard for s in dataset.shards if s[0].shard not in complete}
            )
        complete = strategy.broadcast(complete, src=0)
        strategy.barrier()
        self._complete = set(complete)
        self._seen: list[str] = []
        self._splits = sorted({s[0].split for s in dataset.shards})
        self._sums = {sp: ClassSums(self.sites, self.adapter.hidden_size) for sp in self._splits}

    def _scan(self, shards) -> list[str]:
        """Names of shards already complete on disk: same content key and ids, tensors matching their checksum,
        not marked ``partial`` in the old index."""
        old = C.read_index(self.run_dir) or {}
        partial = {e["name"] for e in old.get("shards", []) if e.get("status") == "partial"}
        done = []
        for shard in shards:
            name = shard[0].shard
            ids = [r.id for r in shard]
            path = C.shard_path(self.run_dir, name)
            if name not in partial and C.shard_is_complete(path, self.shard_keys[name], ids):
                done.append(name)
        C.remove_stale_files(self.run_dir, {s[0].shard for s in shards})
        return done

    def _write_index(self, shards, not_done: set[str]) -> None:
        C.write_index(
            self.run_dir,
            {
                **self.cache_cfg,
                "fingerprint": self.fp,
                "config_fingerprint": self.config_fp,
                "examples": [r.to_dict() for shard in shards for r in shard],
                "shards": [
                    {
                        "name": s[0].shard,
                        "key": self.shard_keys[s[0].shard],
                        "split": s[0].split,
                        "file": f"{s[0].shard}.safetensors",
                        "n": len(s),
                        "status": "pending" if s[0].shard in not_done else "complete",
                    }
                    for s in shards
                ],
                "class_sums": C.SUMS_FILE,
            },
        )

    @torch.no_grad()
    def record(self, batch: dict) -> dict[str, torch.Tensor]:
        """One pass over the batch: ``{site: (B, H)}`` on the CPU in the storage dtype."""
        settings = self.settings
        with ActivationRecorder(
            self.adapter, self.sites, reduction=settings.position, half="cond", dtype=self.store_dtype
        ) as rec:
            if settings.source == "prompt":
                prefill(self.adapter, batch)
            else:
                greedy_generation(self.adapter, batch["texts"], settings.gen_steps, settings.guidance_scale)
        return rec.results

    def predict_step(self, batch: dict, batch_idx: int):
        name = batch["shard"]
        if not name:
            raise ValueError(
                "Each batch must be exactly one shard (use PromptDataModule.predict_dataloader())."
            )
        if name in self._seen:  # a padding sampler may hand a rank the same shard twice
            return {"shard": name, "n": 0}
        self._seen.append(name)
        path = C.shard_path(self.run_dir, name)
        acts = self._read_complete(path) if name in self._complete else None
        if acts is None:
            acts = self.record(batch)
            C.write_shard(
                path,
                acts,
                index=batch["index"],
                labels=batch["labels"],
                ids=batch["ids"],
                key=self.shard_keys[name],
                fp=self.config_fp,
                rank=self.global_rank,
            )
        self._sums[batch["splits"][0]].update_all(acts, batch["labels"].cpu())
        return {"shard": name, "n": len(batch["ids"])}

    def _read_complete(self, path: Path) -> dict[str, torch.Tensor] | None:
        """A complete shard's ``{site: (n, H)}``, verified against its checksum; None if it no longer reads
        back intact (then it is recomputed)."""
        try:
            tensors, _ = C.read_shard(path, self.sites)
        except C.CacheError as err:
            log.warning("%s Recomputing it.", err)
            return None
        return {s: t for s, t in tensors.items() if s in self.sites}

    def on_predict_end(self) -> None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        seen = [self._seen]
        if distributed:
            seen = [None] * dist.get_world_size()
            dist.all_gather_object(seen, self._seen)
        flat = [n for rank_seen in seen for n in rank_seen]
        for sp in self._splits:
            self._sums[sp].all_reduce()
        if len(flat) != len(set(flat)):  # a shard counted on two ranks: rebuild the sums from disk
            self._sums = self._sums_from_disk()
        if self.trainer.is_global_zero:
            dataset = self._dataset()
            missing = {s[0].shard for s in dataset.shards if s[0].shard not in set(flat)}
            save_class_sums(
                C.activations_dir(self.run_dir) / C.SUMS_FILE, self._sums, {"fingerprint": self.fp}
            )
            self._write_index(dataset.shards, missing)
        self.trainer.strategy.barrier()

    def _sums_from_disk(self) -> dict[str, ClassSums]:
        sums = {sp: ClassSums(self.sites, self.adapter.hidden_size) for sp in self._splits}
        for shard in self._dataset().shards:
            tensors, _ = C.read_shard(C.shard_path(self.run_dir, shard[0].shard), self.sites)
            sums[shard[0].split].update_all({s: tensors[s] for s in self.sites}, tensors["labels"])
        return sums


def extract_activations(
    run_dir: str | Path,
    probe_set,
    model: MusicGenAdapter | ModelSettings,
    settings: ExtractSettings,
    probe: ProbeSettings,
    trainer: TrainerSettings,
    *,
    callbacks: Sequence = (),
) -> Path:
    """Cache activations of a probe set into ``<run_dir>/activations`` (resumable); returns that folder.

    ``probe_set``: a ProbeSet, a name or a YAML path. ``model``: a loaded adapter (shared with forked ranks) or
    :class:`ModelSettings` (loaded in ``setup()`` on each rank with every setting). ``probe``: split fractions,
    seed and example form; ``trainer``: where it runs (several CPU processes: gloo ranks started as
    ``trainer.strategy`` says, see :func:`~steerlit.directions.ddp.loop_strategy`). ``callbacks`` go to the
    ``Trainer``.
    """
    module = ActivationCacheModule(model, run_dir, settings)
    preloaded = module.adapter is not None
    datamodule = PromptDataModule.from_settings(
        probe_set,
        probe,
        batch_size=settings.batch_size,
        tokenizer=module.adapter.tokenizer if preloaded else None,
    )
    quiet_lightning()
    predictor = L.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        strategy=loop_strategy(trainer, shares_loaded_model=preloaded),
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=trainer.enable_progress_bar,
        enable_model_summary=False,
    )
    # Under DDP the loaded model's weights are broadcast from rank 0 in place: the same values (every rank loaded
    # the same files), so the model keeps its files' fingerprint and the directions fitted here match it.
    with weights_rewritten_unchanged(module.adapter.model) if preloaded else contextlib.nullcontext():
        predictor.predict(module, datamodule=datamodule, return_predictions=False)
    return C.activations_dir(run_dir)
