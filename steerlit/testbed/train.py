"""One command that builds the testbed: synth -> codec -> codes -> LM -> assembled MusicGen.

    python -m steerlit.testbed.train --config configs/testbed/default.yaml [--stages codec,codes,lm,assemble]

Stages write into ``run_dir`` and skip themselves when their output is already there (``--force``
redoes them), so an interrupted run can be resumed by re-running the same command:

* ``codec``: trains :class:`~steerlit.testbed.codec.CodecModule` on random crops of synthetic
  clips and saves the stock ``EncodecModel`` (our codebooks copied in) to ``run_dir/codec/encodec``.
* ``codec_decoder`` (with a ``codec_decoder`` config section): fine-tunes the codec's decoder alone
  (encoder and codebooks frozen, so codes stay valid) with extra losses on the spectral envelope and
  centroid; saved to ``run_dir/codec/decoder_ft`` and shipped by ``assemble``. With ``widen: k`` the
  codec first gets k times the channels, the old ones computing as before (same codes, more decoder
  capacity; :mod:`steerlit.testbed.widen`). Independent of ``lm``, so the two can train at once.
* ``codes``: renders the training clips, encodes them with that EnCodec and caches codes + captions
  in ``cache_dir`` (git-ignored).
* ``lm``: trains T5 encoder + MusicGen decoder (:class:`~steerlit.testbed.lm.MusicgenLM`) on the
  cached codes; saves the composite model to ``run_dir/lm/model``.
* ``assemble``: writes the model, tokenizer + ``EncodecFeatureExtractor`` (``MusicgenProcessor``),
  the probe YAMLs and a model card to ``out_dir``.
* ``evaluate``: runs :mod:`steerlit.testbed.evaluate` on ``out_dir``, writes ``eval.json`` there and
  refreshes the model card with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from steerlit.testbed.train_config import (
    ADVERSARIAL_OPTIONS,
    CODEC_MODULE_OPTIONS,
    LM_MODULE_OPTIONS,
    check_config,
)

STAGES = ("codec", "codes", "lm", "codec_decoder", "assemble", "evaluate")


def _setup_logger(cfg: DictConfig, stage: str):
    """A Lightning logger per config: ``None`` or an offline W&B logger living inside run_dir."""
    if cfg.logger == "none":
        return False
    if cfg.logger != "wandb":
        raise ValueError(f"logger must be 'none' or 'wandb', got {cfg.logger!r}")
    wandb_dir = Path(cfg.run_dir) / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = "offline"
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        os.environ[var] = str(wandb_dir.resolve())
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project="steerlit-testbed",
        name=f"{Path(cfg.run_dir).name}-{stage}",
        save_dir=str(wandb_dir),
        offline=True,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def _trainer(cfg: DictConfig, stage_cfg: DictConfig, stage: str, clip_gradients: bool = True):
    """The stage's Trainer. ``clip_gradients=False`` for modules that clip their own (manual optimisation)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

    ckpt_dir = Path(cfg.run_dir) / stage / "checkpoints"
    logger = _setup_logger(cfg, stage)
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=stage_cfg.checkpoint_every, save_last=True),
        TQDMProgressBar(refresh_rate=10),  # readable in a log file, unlike the rich bar
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=stage_cfg.max_steps,
        max_epochs=-1,
        max_time={"minutes": stage_cfg.max_time_min},
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(Path(cfg.run_dir) / stage),
        log_every_n_steps=10,
        gradient_clip_val=stage_cfg.get("grad_clip", 1.0) if clip_gradients else None,
        enable_progress_bar=True,
        enable_model_summary=True,
    ), ckpt_dir


def _given(stage_cfg: DictConfig, *keys: str) -> dict:
    """The optional keyword arguments among ``keys`` that the config sets (the module's defaults hold
    for the others), as plain Python values."""
    return {
        k: OmegaConf.to_object(stage_cfg[k]) if OmegaConf.is_config(stage_cfg[k]) else stage_cfg[k]
        for k in keys
        if k in stage_cfg
    }


def _train_seconds(trainer, t0: float) -> float:
    """Training wall time summed over resumed runs (Lightning's Timer keeps it in the checkpoint when
    ``max_time`` is set), else the time since ``t0``."""
    from lightning.pytorch.callbacks import Timer

    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return float(timers[0].time_elapsed("train")) if timers else time.time() - t0


def _save_train_stats(trainer, t0: float, out: Path, stage: str, **extra) -> None:
    """``out/train_stats.json`` (atomic): the last logged metrics, steps, training seconds and ``extra``."""
    from steerlit.engines.results import atomic_write_text

    stats = {k: float(v) for k, v in trainer.callback_metrics.items()}
    stats.update(steps=trainer.global_step, seconds=_train_seconds(trainer, t0), **extra)
    atomic_write_text(out / "train_stats.json", json.dumps(stats, indent=2))
    print(f"[{stage}] saved {out}: {stats}")


def _resume_path(ckpt_dir: Path) -> str | None:
    """The newest ``last*.ckpt`` in ``ckpt_dir`` (None if there is none). Lightning writes ``last-v1.ckpt``
    next to a ``last.ckpt`` it did not write itself, e.g. when a run folder was copied and resumed."""
    lasts = list(ckpt_dir.glob("last*.ckpt"))
    return str(max(lasts, key=lambda p: p.stat().st_mtime)) if lasts else None


def _fit_codec(cfg: DictConfig, c: DictConfig, stage: str, out: Path, init_from: str | None) -> Path:
    """Train a :class:`~steerlit.testbed.codec.CodecModule` with options ``c`` (optionally starting
    from a trained codec) and save its stock ``EncodecModel`` to ``out``."""
    from torch.utils.data import DataLoader
    from transformers import AutoConfig, EncodecModel, MusicgenForConditionalGeneration

    from steerlit.testbed.codec import (
        ClipCropDataset,
        CodecModule,
        export_encodec,
        init_from_encodec,
        make_encodec_config,
    )

    widen = c.get("widen", 1)
    if init_from:  # a MusicGen folder (its audio_encoder) or an EncodecModel folder
        is_musicgen = AutoConfig.from_pretrained(init_from).model_type == "musicgen"
        source = (
            MusicgenForConditionalGeneration.from_pretrained(init_from).audio_encoder
            if is_musicgen
            else EncodecModel.from_pretrained(init_from)
        )
        if widen != 1:  # more decoder width, same codes: see steerlit.testbed.widen
            from steerlit.testbed.widen import widen_encodec

            source = widen_encodec(source, widen)
            print(f"[{stage}] widened to num_filters={source.config.num_filters}")
        enc_cfg = source.config
    else:
        if widen != 1:
            raise ValueError(f"{stage}.widen widens a trained codec; set {stage}.init_from or drop widen")
        source = None
        enc_cfg = make_encodec_config(
            num_filters=c.num_filters,
            hidden_size=c.hidden_size,
            codebook_size=c.codebook_size,
            num_codebooks=c.num_codebooks,
            num_lstm_layers=c.num_lstm_layers,
        )
    torch.manual_seed(cfg.seed)
    module_cls, options = CodecModule, _given(c, *CODEC_MODULE_OPTIONS)
    if c.get("w_adv", 0):  # adversarial (manual optimisation): the module clips its own gradients
        from steerlit.testbed.codec_gan import AdversarialCodecModule as module_cls

        options.update(_given(c, *ADVERSARIAL_OPTIONS, "grad_clip"))
    module = module_cls(
        enc_cfg.to_dict(),
        lr=c.lr,
        log_audio_every=c.log_audio_every if cfg.logger != "none" else 0,
        **options,
    )
    if source is not None:
        init_from_encodec(module, source)
        print(f"[{stage}] initialised from {init_from}")
    data = DataLoader(
        ClipCropDataset(
            cfg.data.train_clips, c.crop_s, cfg.data.base_seed, cfg.seed, c.get("stem_prob", 0.0)
        ),
        batch_size=c.batch_size,
    )
    trainer, ckpt_dir = _trainer(cfg, c, stage, clip_gradients=module.automatic_optimization)
    t0 = time.time()
    trainer.fit(module, data, ckpt_path=_resume_path(ckpt_dir))
    encodec = export_encodec(module)
    encodec.save_pretrained(out)
    _save_train_stats(trainer, t0, out, stage, params=sum(p.numel() for p in encodec.parameters()))
    _finish_wandb()
    return out


def stage_codec(cfg: DictConfig, force: bool = False) -> Path:
    """Train the codec; returns the folder of the exported ``EncodecModel``."""
    out = Path(cfg.run_dir) / "codec" / "encodec"
    if out.exists() and not force:
        print(f"[codec] exists, skipping: {out}")
        return out
    init = cfg.codec.get("init_from")
    return _fit_codec(cfg, cfg.codec, "codec", out, str(init) if init else None)


def stage_codec_decoder(cfg: DictConfig, force: bool = False) -> Path | None:
    """Fine-tune the codec's decoder alone (encoder and codebooks frozen, so the cached codes and the
    LM trained on them stay valid); ``assemble`` then ships this decoder. Skipped without a
    ``codec_decoder`` config section. Can run while the ``lm`` stage trains."""
    if "codec_decoder" not in cfg:
        print("[codec_decoder] no codec_decoder section in the config, skipping")
        return None
    out = Path(cfg.run_dir) / "codec" / "decoder_ft"
    if out.exists() and not force:
        print(f"[codec_decoder] exists, skipping: {out}")
        return out
    c = OmegaConf.merge(cfg.codec_decoder, {"decoder_only": True})
    return _fit_codec(cfg, c, "codec_decoder", out, str(Path(cfg.run_dir) / "codec" / "encodec"))


def stage_codes(cfg: DictConfig, force: bool = False) -> Path:
    """Render, caption and encode the training clips once; returns the cache file."""
    from steerlit.testbed.lm import build_code_cache, code_cache_matches

    encodec_dir = Path(cfg.run_dir) / "codec" / "encodec"
    cache = Path(cfg.cache_dir) / "codes.pt"
    weights = encodec_dir / "model.safetensors"
    fresh = cache.exists() and (not weights.exists() or cache.stat().st_mtime > weights.stat().st_mtime)
    if fresh and not force:
        if code_cache_matches(cache, cfg.data.train_clips, cfg.data.base_seed, cfg.data.clip_s):
            print(
                f"[codes] exists, is newer than the codec and holds the configured clips, skipping: {cache}"
            )
            return cache
        print(
            f"[codes] {cache} holds other clips than data.train_clips/base_seed/clip_s and the current synth "
            "render: rebuilding"
        )
    t0 = time.time()
    build_code_cache(
        encodec_dir, cache, cfg.data.train_clips, cfg.data.base_seed, cfg.data.clip_s, seed=cfg.seed
    )
    print(f"[codes] wrote {cache} in {time.time() - t0:.0f} s")
    return cache


def stage_lm(cfg: DictConfig, force: bool = False) -> Path:
    """Train the text encoder + MusicGen decoder on the cached codes; returns the model folder."""
    from torch.utils.data import DataLoader

    from steerlit.testbed.captions import training_corpus
    from steerlit.testbed.lm import CodeDataset, MusicgenLM, build_musicgen

    out = Path(cfg.run_dir) / "lm" / "model"
    if out.exists() and not force:
        print(f"[lm] exists, skipping: {out}")
        return out
    from steerlit.models.tokenizer import build_t5_tokenizer

    tok_dir = Path(cfg.run_dir) / "lm" / "tokenizer"
    if tok_dir.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = build_t5_tokenizer(
            training_corpus(),
            vocab_size=cfg.lm.text_vocab_size,
            word_level=cfg.lm.get("word_tokenizer", False),
        )
        tokenizer.save_pretrained(tok_dir)
    torch.manual_seed(cfg.seed)
    model = build_musicgen(cfg, Path(cfg.run_dir) / "codec" / "encodec", text_vocab_size=len(tokenizer))
    if cfg.lm.get("text_pretrain_steps", 0):
        pretrain_text_encoder(cfg, model, tokenizer, force)
    dataset = CodeDataset(Path(cfg.cache_dir) / "codes.pt", tokenizer, seed=cfg.seed)
    data = DataLoader(
        dataset, batch_size=cfg.lm.batch_size, shuffle=True, collate_fn=dataset.collate, drop_last=True
    )
    module = MusicgenLM(
        model,
        lr=cfg.lm.lr,
        warmup_steps=cfg.lm.warmup_steps,
        max_steps=cfg.lm.max_steps,
        cond_dropout=cfg.lm.cond_dropout,
        log_audio_every=cfg.lm.log_audio_every if cfg.logger != "none" else 0,
        tokenizer=tokenizer,
        **_given(cfg.lm, *LM_MODULE_OPTIONS),
    )
    if cfg.lm.get("init_from"):  # a Lightning checkpoint of this stage (e.g. of an earlier run)
        state = torch.load(cfg.lm.init_from, map_location="cpu", weights_only=True)["state_dict"]
        skip = tuple(f"model.{p}" for p in cfg.lm.get("init_skip", []))  # e.g. [text_encoder]
        missing, unexpected = module.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(skip)}, strict=not skip
        )
        if unexpected or any(not k.startswith(skip) for k in missing):
            raise ValueError(f"lm.init_from {cfg.lm.init_from}: missing {missing}, unexpected {unexpected}")
        print(f"[lm] initialised from {cfg.lm.init_from} (kept fresh: {list(skip) or 'nothing'})")
    trainer, ckpt_dir = _trainer(cfg, cfg.lm, "lm")
    t0 = time.time()
    trainer.fit(module, data, ckpt_path=_resume_path(ckpt_dir))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _save_train_stats(trainer, t0, out, "lm")
    _finish_wandb()
    return out


def pretrain_text_encoder(cfg: DictConfig, model, tokenizer, force: bool = False) -> None:
    """Pre-train ``model.text_encoder`` in place on caption -> clip attributes
    (:mod:`steerlit.testbed.text_pretrain`); cached in ``run_dir/lm/text_encoder``. Prints the
    held-out readout (captions of held-out clips) so that one sees what the features carry."""
    from torch.utils.data import DataLoader
    from transformers import T5EncoderModel

    from steerlit.testbed.text_pretrain import (
        CaptionAttributeDataset,
        TextAttributeModule,
        collate_captions,
        readout_report,
    )

    out = Path(cfg.run_dir) / "lm" / "text_encoder"
    if out.exists() and not force:
        print(f"[lm] pre-trained text encoder exists, using it: {out}")
        model.text_encoder.load_state_dict(T5EncoderModel.from_pretrained(out).state_dict())
        return
    module = TextAttributeModule(model.text_encoder, lr=cfg.lm.get("text_pretrain_lr", 1e-3))
    data = DataLoader(
        CaptionAttributeDataset(cfg.data.train_clips, cfg.data.base_seed, seed=cfg.seed),
        batch_size=64,
        collate_fn=collate_captions(tokenizer),
    )
    stage_cfg = OmegaConf.create(
        {
            "max_steps": cfg.lm.text_pretrain_steps,
            "max_time_min": 30,
            "checkpoint_every": 1000,
            "grad_clip": 1.0,
        }
    )
    trainer, _ = _trainer(cfg, stage_cfg, "text")
    trainer.fit(module, data)
    report = readout_report(module, tokenizer, base_seed=cfg.data.heldout_base_seed)
    print(f"[lm] text encoder pre-trained: {report}")
    module.text_encoder.save_pretrained(out)
    (out / "readout.json").write_text(json.dumps(report, indent=2))
    _finish_wandb()


def stage_assemble(cfg: DictConfig, force: bool = False) -> Path:
    """Write model + processor + probes + model card into ``out_dir``."""
    from steerlit.testbed.captions import write_probe_sets
    from steerlit.testbed.lm import assemble

    out = Path(cfg.out_dir)
    lm_dir = Path(cfg.run_dir) / "lm" / "model"
    tuned = Path(cfg.run_dir) / "codec" / "decoder_ft"
    sources = (("codec", Path(cfg.run_dir) / "codec" / "encodec"), ("lm", lm_dir), ("codec_decoder", tuned))
    stats = {
        f"{prefix}_train_stats.json": src / "train_stats.json"
        for prefix, src in sources
        if (src / "train_stats.json").exists()
    }
    write_probe_sets(Path("probes"))
    assemble(lm_dir, out, cfg, extra_files=stats, decoder_from=tuned if tuned.exists() else None)
    print(f"[assemble] wrote {out}")
    return out


def stage_evaluate(cfg: DictConfig, force: bool = False) -> Path:
    """Run :mod:`steerlit.testbed.evaluate` on ``out_dir``; write ``eval.json`` and refresh the card."""
    from transformers import MusicgenForConditionalGeneration

    from steerlit.engines.results import atomic_write_text
    from steerlit.testbed.evaluate import PROMPT_SEEDS, evaluate
    from steerlit.testbed.model_card import write_model_card

    out = Path(cfg.out_dir)
    ev = cfg.get("eval", {})
    results = evaluate(
        out,
        ev.get("n_clips", 40),
        ev.get("n_prompts", 16),
        cfg.data.heldout_base_seed,
        tuple(ev.get("seeds", PROMPT_SEEDS)),
    )
    atomic_write_text(out / "eval.json", json.dumps(results, indent=2))
    write_model_card(out, cfg, MusicgenForConditionalGeneration.from_pretrained(out))
    print(f"[evaluate] wrote {out / 'eval.json'}")
    return out


def _finish_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/testbed/default.yaml")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--force", action="store_true", help="redo stages whose output exists")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. lm.max_steps=100")
    args = parser.parse_args(argv)
    cfg = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(args.overrides))
    check_config(cfg)
    torch.set_num_threads(int(cfg.threads))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(cfg.run_dir) / "numba_cache"))
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, Path(cfg.run_dir) / "config.yaml")
    funcs = {
        "codec": stage_codec,
        "codes": stage_codes,
        "codec_decoder": stage_codec_decoder,
        "lm": stage_lm,
        "assemble": stage_assemble,
        "evaluate": stage_evaluate,
    }
    for stage in args.stages.split(","):
        funcs[stage.strip()](cfg, force=args.force)


if __name__ == "__main__":
    main()
