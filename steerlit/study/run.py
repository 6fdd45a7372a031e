"""The main job: extract → directions (difference of means + probes) → steered grid → metrics → W&B + run folder.

Run folder (``runs/<name>/``)::

    config.yaml                    resolved config
    <concept>/activations/         activation cache (safetensors shards + index.json)
    <concept>/directions.safetensors   every method's direction per site (tensor names <method>/<site>)
    <concept>/probes/              trained probe weights; <concept>/plots/ + comparison.csv: method comparison
    samples/*.wav  results.jsonl  metrics.csv  per_alpha.csv  summary.csv  plots/*.png
    wandb/                         W&B files (offline runs: `wandb sync runs/<name>/wandb/wandb/offline-run-*`)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import lightning as L

from steerlit.config import as_container, check_layers, to_yaml
from steerlit.engines.results import atomic_write_text


def _progress(msg: str) -> None:
    print(f"[steerlit {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def limited_probe_set(name: str, max_per_pole: int | None, form: str):
    from steerlit.data.probe_set import load_probe_set

    ps = load_probe_set(name)
    if max_per_pole:
        ps = dataclasses.replace(
            ps,
            positive_prompts=ps.positive_prompts[:max_per_pole],
            negative_prompts=ps.negative_prompts[:max_per_pole],
            pairs=ps.pairs[:max_per_pole],
        )
    return ps


def model_num_layers(cfg) -> int:
    """The decoder depth from the model's config.json alone (no weights), to validate layers early."""
    from transformers import AutoConfig

    from steerlit.models.loading import resolve_model_path

    path, model_id = resolve_model_path(cfg.model.name)
    try:
        config = AutoConfig.from_pretrained(
            str(path) if path is not None else model_id,
            local_files_only=True,
            cache_dir=cfg.model.hf_cache_dir,
        )
    except OSError:
        from steerlit.models.loading import load_model

        load_model(cfg.model.name, hf_cache_dir=cfg.model.hf_cache_dir)  # raises the one clear error
        raise
    return int(config.decoder.num_hidden_layers)


def prepare_run(cfg):
    """Create the run folder and write the resolved config; returns the RunDir."""
    from steerlit.study.layout import RunDir

    run = RunDir.create(cfg.output_dir, cfg.run_name, prefix=cfg.experiment or "run")
    atomic_write_text(run.config, to_yaml(cfg))
    return run


def load_adapter(cfg):
    from steerlit.models.loading import load_model

    return load_model(
        cfg.model.name,
        device=cfg.model.device,
        dtype=cfg.model.dtype,
        allow_download=cfg.model.allow_download,
        attn_implementation=cfg.model.attn_implementation,
        hf_cache_dir=cfg.model.hf_cache_dir,
    )


def source_layers(cfg, num_layers: int) -> list[int]:
    return [int(x) for x in cfg.steer.layers] if cfg.steer.layers else [num_layers // 2]


def extract_activations_only(cfg, adapter, concept: str, concept_dir: Path) -> None:
    """Cache activations for one probe set into ``concept_dir/activations`` (resumable)."""
    from steerlit.directions.extraction import extract_activations

    ps = limited_probe_set(concept, cfg.probe.max_per_pole, cfg.probe.form)
    layers = cfg.extract.layers if cfg.extract.layers is not None else range(adapter.num_layers)
    sites = [f"{cfg.extract.site_kind}.{i}" for i in layers]
    _progress(
        f"{ps.name}: caching {len(sites)} sites for {len(ps.positive_prompts) + len(ps.negative_prompts)} prompts"
    )
    extract_activations(
        concept_dir,
        ps,
        adapter,
        source=cfg.extract.source,
        sites=sites,
        reduction=cfg.extract.position,
        gen_steps=cfg.extract.gen_steps,
        dtype=cfg.extract.dtype,
        form=cfg.probe.form,
        fractions=list(cfg.probe.split),
        split_seed=cfg.probe.seed,
        batch_size=cfg.extract.batch_size,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
    )


def fit_concept(cfg, concept_dir: Path, wandb_run=None, callbacks=(), logger=None) -> Path:
    """Fit every configured direction method on a concept's cache; returns the directions file."""
    from steerlit.directions.fit import fit_directions

    _progress(f"{concept_dir.name}: fitting {list(cfg.fit.methods)}")
    probe = as_container(cfg.fit.probe)
    return fit_directions(
        concept_dir,
        list(cfg.fit.methods),
        scale=probe.pop("scale"),
        seed=cfg.seed,
        probe_cfg={k: probe[k] for k in ("lr", "weight_decay", "standardize", "batch_size")},
        accelerator=cfg.trainer.accelerator,
        devices=1,
        max_epochs=probe["max_epochs"],
        callbacks=list(callbacks),
        wandb_run=wandb_run,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
        **({"logger": logger} if logger is not None else {}),
    )


def make_callback(cfg, adapter, directions, run_root: Path, concepts, wandb_run=None, methods=None, **kw):
    from steerlit.callbacks.steered_generation import GridSpec, MetricSpec, SteeredGenerationCallback
    from steerlit.data.probe_set import load_eval_prompts

    prompts = load_eval_prompts(cfg.probe.eval_set)
    prompts = prompts[: cfg.steer.n_prompts] if cfg.steer.n_prompts else prompts
    s = cfg.steer
    grid = GridSpec(
        prompts=prompts,
        concepts=list(concepts),
        methods=list(methods or s.methods),
        layers=source_layers(cfg, adapter.num_layers),
        alphas=[float(a) for a in s.alphas],
        strategies=list(s.strategies),
        seeds=[int(x) for x in s.seeds],
        operator=s.operator,
        schedule=as_container(s.schedule) if not isinstance(s.schedule, str) else s.schedule,
        half=s.half,
        max_new_tokens=adapter.seconds_to_steps(s.seconds),
        guidance_scale=s.guidance_scale,
        temperature=s.temperature,
        top_k=s.top_k,
        batch_size=s.batch_size,
        engine=s.engine,
        devices=grid_devices(cfg),
        accelerator=cfg.trainer.accelerator,
    )
    metrics = MetricSpec(
        attributes=dict(cfg.metrics.attributes),
        tempo_kwargs=as_container(cfg.metrics.tempo),
        quality=cfg.metrics.quality,
        clap_path=cfg.metrics.clap_path,
    )
    return SteeredGenerationCallback(
        adapter,
        directions,
        grid,
        run_root,
        metrics=metrics,
        wandb_run=wandb_run,
        log_audio=cfg.logger.log_audio,
        max_audio=cfg.logger.max_audio,
        progress=cfg.trainer.enable_progress_bar,
        **kw,
    )


def grid_devices(cfg) -> int:
    """Processes for the steering grid: trainer.devices under a DDP strategy, else 1."""
    devices = cfg.trainer.devices
    if cfg.trainer.strategy != "ddp" or not isinstance(devices, int):
        return 1
    if devices == -1:
        import torch

        return max(1, torch.cuda.device_count())
    return devices


def run_main(cfg) -> list[dict]:
    """Run the whole study described by ``cfg``; returns the summary rows (also printed and saved)."""
    from steerlit.callbacks.steered_generation import print_summary
    from steerlit.directions.io import load_directions
    from steerlit.study.tracking import make_wandb_logger

    check_layers(cfg, model_num_layers(cfg))  # fail before loading weights
    L.seed_everything(cfg.seed, verbose=False)
    run = prepare_run(cfg)
    _progress(f"run folder {run.root}")
    logger = make_wandb_logger(cfg.logger, run.root, run.root.name, as_container(cfg))
    wandb_run = logger.experiment if logger is not None else None
    adapter = load_adapter(cfg)
    _progress(f"model {adapter.model_id}: {adapter.num_layers} layers x {adapter.hidden_size}")
    directions = {}
    try:
        for concept in cfg.probe.concepts:
            name = limited_probe_set(concept, None, cfg.probe.form).name
            concept_dir = run.root / name
            callbacks = []
            if cfg.steer.every_n_epochs:
                callbacks.append(
                    make_callback(
                        cfg,
                        adapter,
                        _probe_provider(name),
                        run.root / name,
                        [name],
                        wandb_run=wandb_run,
                        methods=["logistic", "regression"],
                        every_n_epochs=cfg.steer.every_n_epochs,
                        at_fit_end=False,
                    )
                )
            extract_activations_only(cfg, adapter, concept, concept_dir)
            path = fit_concept(cfg, concept_dir, wandb_run=wandb_run, callbacks=callbacks, logger=logger)
            directions[name] = load_directions(path, adapter)
        _progress("steering grid")
        callback = make_callback(cfg, adapter, directions, run.root, list(directions), wandb_run=wandb_run)
        summary = callback.evaluate(stage="final")
        print_summary(summary)
        _progress(f"done: {run.root}")
        return summary
    finally:
        if wandb_run is not None:
            wandb_run.finish()


def _probe_provider(concept: str):
    """Directions of a probe while it trains: ``{concept: DirectionSet({(kind, site): w})}``."""
    from steerlit.directions.io import DirectionSet

    def provider(module):
        vectors = {
            (module.kind, s): v.detach().float().cpu() for s, v in module.directions("diffmean").items()
        }
        return {concept: DirectionSet(vectors)}

    return provider
