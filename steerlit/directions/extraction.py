"""Activation caching as a Lightning predict loop (``Trainer.predict``), resumable and DDP-aware.

:class:`ActivationCacheModule` records every requested site in one pass per batch (= one shard of the
:class:`~steerlit.data.datamodule.PromptDataModule`) and writes ``<run>/activations/`` (layout in
:mod:`steerlit.directions.cache`). ``source``:

* ``prompt`` -- text only: a teacher-forced forward over the decoder's BOS token (the prefill step of
  generation, conditional branch), reduction ``first``: (B, H) per site.
* ``generate`` -- a short generation of ``gen_steps`` tokens (greedy, or sampled with a fixed seed per
  example derived from ``gen_seed`` and the example id, so a row does not depend on its batch), reduced
  over decoding steps with ``first``/``mean``/``last``; the conditional CFG half is kept.

Resuming: shards that read back complete (same fingerprint and ids, not marked ``partial``) are not
recomputed -- they are only read to add them to the streaming class sums. Under DDP each rank writes its
own shards; class sums (:class:`~steerlit.directions.diffmean.ClassSums`, per split) are all-reduced at
the end, and rank 0 writes ``class_sums.safetensors`` and the final ``index.json``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import lightning as L
import torch

from steerlit.data.settings import ProbeSettings
from steerlit.directions import cache as C
from steerlit.directions.diffmean import ClassSums, save_class_sums
from steerlit.intervene.record import ActivationRecorder
from steerlit.models.loading import load_model, resolve_dtype
from steerlit.runtime import TrainerSettings

if TYPE_CHECKING:  # settings.py imports this module's Source choices
    from steerlit.directions.settings import ExtractSettings

Source = Literal["prompt", "generate"]
SOURCES: tuple[Source, ...] = get_args(Source)


def example_seed(gen_seed: int, example_id: str) -> int:
    """Per-example sampling seed: depends only on ``gen_seed`` and the id."""
    return zlib.crc32(f"{gen_seed}:{example_id}".encode()) & 0x7FFFFFFF


class ActivationCacheModule(L.LightningModule):
    """Records sites for each predict batch and writes the activation cache of ``run_dir``.

    ``model``: a loaded :class:`~steerlit.models.adapter.MusicGenAdapter` (shared with forked DDP
    ranks) or a name/path loaded in ``setup()`` (needed with spawned ranks). ``sites``: site names,
    default every ``resid_post.i``. ``reduction``: ``first`` for ``source="prompt"`` (the only one);
    ``first|mean|last`` (default ``mean``) for ``generate``. ``gen_seed=None``: greedy generation.
    ``dtype``: storage dtype of cached activations.
    """

    def __init__(
        self,
        model,
        run_dir: str | Path,
        *,
        sites: Sequence[str] | None = None,
        source: str = "prompt",
        reduction: str | None = None,
        gen_steps: int = 16,
        guidance_scale: float = 3.0,
        gen_seed: int | None = None,
        dtype: str | torch.dtype = "float32",
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        if source not in SOURCES:
            raise ValueError(f"Unknown source {source!r}; use one of {SOURCES}.")
        reduction = reduction or ("first" if source == "prompt" else "mean")
        if source == "prompt" and reduction != "first":
            raise ValueError("source='prompt' records the single prefill position: use reduction='first'.")
        if reduction not in ("first", "mean", "last"):
            raise ValueError(f"reduction must be first|mean|last for a cache, got {reduction!r}.")
        self.run_dir = Path(run_dir)
        self.source, self.reduction = source, reduction
        self.gen_steps, self.guidance_scale, self.gen_seed = int(gen_steps), float(guidance_scale), gen_seed
        self.store_dtype = resolve_dtype(dtype) or torch.float32
        self._model_spec, self._model_kwargs = model, dict(model_kwargs or {})
        self.adapter = None if isinstance(model, str | Path) else model
        if self.adapter is not None:
            self.musicgen = self.adapter.model  # registered so Lightning moves it to the device
        self._site_arg = list(sites) if sites is not None else None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.adapter is None:
            self.adapter = load_model(str(self._model_spec), **self._model_kwargs)
            self.musicgen = self.adapter.model

    @property
    def sites(self) -> list[str]:
        if self._site_arg is None:
            return self.adapter.sites(("resid_post",))
        return [s.name for s in self.adapter.parse_sites(self._site_arg)]

    def configure_optimizers(self):
        return None

    def cache_config(self, data_config: dict | None = None) -> dict:
        """Everything that determines the cached values (hashed into the fingerprint)."""
        return {
            "version": C.CACHE_VERSION,
            "model_id": self.adapter.model_id,
            "hidden_size": self.adapter.hidden_size,
            "num_layers": self.adapter.num_layers,
            "sites": self.sites,
            "source": self.source,
            "reduction": self.reduction,
            "gen_steps": self.gen_steps if self.source == "generate" else 0,
            "guidance_scale": self.guidance_scale if self.source == "generate" else 1.0,
            "gen_seed": self.gen_seed,
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
        self.fp = C.fingerprint(self.cache_cfg)
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
        """Names of shards already complete on disk (and not marked ``partial`` in the old index)."""
        old = C.read_index(self.run_dir) or {}
        partial = {e["name"] for e in old.get("shards", []) if e.get("status") == "partial"}
        if old.get("fingerprint") not in (None, self.fp):
            partial = set()  # another configuration: fingerprints in the shard files decide
        done = []
        for shard in shards:
            name = shard[0].shard
            ids = [r.id for r in shard]
            if name not in partial and C.shard_is_complete(C.shard_path(self.run_dir, name), self.fp, ids):
                done.append(name)
        C.remove_stale_files(self.run_dir, {s[0].shard for s in shards})
        return done

    def _write_index(self, shards, not_done: set[str]) -> None:
        C.write_index(
            self.run_dir,
            {
                **self.cache_cfg,
                "fingerprint": self.fp,
                "examples": [r.to_dict() for shard in shards for r in shard],
                "shards": [
                    {
                        "name": s[0].shard,
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
        adapter, texts = self.adapter, batch["texts"]
        with ActivationRecorder(
            adapter, self.sites, reduction=self.reduction, half="cond", dtype=self.store_dtype
        ) as rec:
            if self.source == "prompt":
                if "input_ids" in batch:
                    inputs = {k: batch[k].to(adapter.device) for k in ("input_ids", "attention_mask")}
                else:
                    inputs = adapter.tokenize(texts)
                bos = adapter.model.generation_config.decoder_start_token_id
                dec = torch.full(
                    (len(texts) * adapter.num_codebooks, 1), bos, dtype=torch.long, device=adapter.device
                )
                adapter.model(**inputs, decoder_input_ids=dec)
            else:
                from steerlit.engines.hf import generate

                seeds = (
                    None if self.gen_seed is None else [example_seed(self.gen_seed, i) for i in batch["ids"]]
                )
                generate(
                    adapter,
                    texts,
                    max_new_tokens=self.gen_steps,
                    guidance_scale=self.guidance_scale,
                    seeds=seeds,
                    decode_audio=False,
                )
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
        if name in self._complete:
            acts = {s: t for s, t in C.read_shard(path, self.sites)[0].items() if s in self.sites}
        else:
            acts = self.record(batch)
            C.write_shard(
                path,
                acts,
                index=batch["index"],
                labels=batch["labels"],
                ids=batch["ids"],
                fp=self.fp,
                rank=self.global_rank,
            )
        self._sums[batch["splits"][0]].update_all(acts, batch["labels"].cpu())
        return {"shard": name, "n": len(batch["ids"])}

    def on_predict_end(self) -> None:
        import torch.distributed as dist

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


def _num_devices(devices) -> int:
    """Number of processes a ``devices`` argument names; ``"auto"`` and ``-1`` count as one (CPU default)."""
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        n = int(devices)
    except (TypeError, ValueError):
        return 1  # "auto": one CPU process
    return n if n > 0 else 1


def extract_activations_kw(
    run_dir: str | Path,
    probe_set,
    model,
    *,
    source: str = "prompt",
    sites: Sequence[str] | None = None,
    reduction: str | None = None,
    gen_steps: int = 16,
    guidance_scale: float = 3.0,
    gen_seed: int | None = None,
    dtype: str = "float32",
    form: str = "poles",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    batch_size: int = 16,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy=None,
    callbacks: Sequence = (),
    **trainer_kwargs,
) -> Path:
    """Cache activations of a probe set into ``<run_dir>/activations`` (resumable); returns that folder.

    ``model``: adapter or name/path; ``probe_set``: ProbeSet, name or YAML path. With ``devices > 1``
    on CPU and no ``strategy``, uses :func:`~steerlit.directions.ddp.cpu_ddp_strategy` (gloo, fork).
    """
    from steerlit.data.datamodule import PromptDataModule
    from steerlit.directions.ddp import cpu_ddp_strategy

    module = ActivationCacheModule(
        model,
        run_dir,
        sites=sites,
        source=source,
        reduction=reduction,
        gen_steps=gen_steps,
        guidance_scale=guidance_scale,
        gen_seed=gen_seed,
        dtype=dtype,
    )
    tokenizer = module.adapter.tokenizer if module.adapter is not None else None
    dm = PromptDataModule(
        probe_set, tokenizer=tokenizer, form=form, fractions=fractions, seed=split_seed, batch_size=batch_size
    )
    if strategy is None:
        strategy = cpu_ddp_strategy() if accelerator == "cpu" and _num_devices(devices) > 1 else "auto"
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_progress_bar", False)
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return C.activations_dir(run_dir)


def extract_activations(
    run_dir: str | Path,
    probe_set,
    model,
    settings: ExtractSettings,
    probe: ProbeSettings,
    trainer: TrainerSettings,
    *,
    callbacks: Sequence = (),
) -> Path:
    """Cache activations of a probe set into ``<run_dir>/activations`` (resumable); returns that folder.

    ``model``: a loaded adapter (shared with forked ranks) or :class:`ModelSettings` (loaded in ``setup()`` on each
    rank with every setting). ``probe``: split fractions, seed and example form; ``trainer``: where it runs.
    """
    # TODO(directions helper): fold extract_activations_kw into this settings-based entry point.
    layers = settings.layers
    return extract_activations_kw(
        run_dir,
        probe_set,
        model,
        source=settings.source,
        sites=None if layers is None else [f"{settings.site_kind}.{i}" for i in layers],
        reduction=settings.position,
        gen_steps=settings.gen_steps,
        dtype=settings.dtype,
        form=probe.form,
        fractions=list(probe.split),
        split_seed=probe.seed,
        batch_size=settings.batch_size,
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        enable_progress_bar=trainer.enable_progress_bar,
        callbacks=callbacks,
    )
