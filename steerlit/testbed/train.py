"""One command that builds the testbed: synth -> codec -> codes -> LM -> assembled MusicGen.

    python -m steerlit.testbed.train --config configs/testbed/default.yaml [--stages codec,codes,lm,assemble]

Stages write into ``run_dir`` and skip themselves when their output is already there (``--force``
redoes them), so an interrupted run can be resumed by re-running the same command; a training
stage stopped mid-way continues from its newest ``last*.ckpt``, loaded weights-only
(:mod:`steerlit.testbed.trainer`):

* ``codec``: trains :class:`~steerlit.testbed.codec.CodecModule` on random crops of synthetic
  clips and saves the stock ``EncodecModel`` (our codebooks copied in) to ``run_dir/codec/encodec``.
* ``codec_decoder`` (with a ``codec_decoder`` config section): fine-tunes the codec's decoder alone
  (encoder and codebooks frozen, so codes stay valid) with extra losses on the spectral envelope and
  centroid; saved to ``run_dir/codec/decoder_ft`` and shipped by ``assemble``. With ``widen: k`` the
  codec first gets k times the channels, the old ones computing as before (same codes, more decoder
  capacity; :mod:`steerlit.testbed.widen`). Independent of ``lm``, so the two can train at once.
* ``codes``: renders the training clips, encodes them with that EnCodec and caches codes + captions
  in ``cache_dir`` (git-ignored; :mod:`steerlit.testbed.code_cache`).
* ``lm``: trains T5 encoder + MusicGen decoder (:class:`~steerlit.testbed.lm.MusicgenLM`) on the
  cached codes; saves the composite model to ``run_dir/lm/model``.
* ``assemble``: writes the model, tokenizer + ``EncodecFeatureExtractor`` (``MusicgenProcessor``),
  the probe YAMLs and a model card to ``out_dir`` (:mod:`steerlit.testbed.assemble`).
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
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoTokenizer,
    EncodecConfig,
    EncodecModel,
    MusicgenForConditionalGeneration,
    T5EncoderModel,
)

from steerlit.files import atomic_write_text
from steerlit.models.tokenizer import build_t5_tokenizer
from steerlit.testbed.assemble import assemble
from steerlit.testbed.captions import training_corpus, write_probe_sets
from steerlit.testbed.code_cache import CodeDataset, build_code_cache, code_cache_matches
from steerlit.testbed.codec import (
    ClipCropDataset,
    CodecModule,
    export_encodec,
    init_from_encodec,
    make_encodec_config,
)
from steerlit.testbed.codec_gan import AdversarialCodecModule
from steerlit.testbed.evaluate import PROMPT_SEEDS, evaluate
from steerlit.testbed.lm import LMTraining, MusicgenLM, build_musicgen
from steerlit.testbed.model_card import write_model_card
from steerlit.testbed.text_pretrain import (
    CaptionAttributeDataset,
    TextAttributeModule,
    collate_captions,
    readout_report,
)
from steerlit.testbed.train_config import (
    ADVERSARIAL_OPTIONS,
    CODEC_MODULE_OPTIONS,
    CODEC_SIZE_KEYS,
    check_config,
    given_options,
)
from steerlit.testbed.trainer import finish_wandb, fit_resuming, save_train_stats, stage_trainer
from steerlit.testbed.widen import widen_encodec

STAGES = ("codec", "codes", "lm", "codec_decoder", "assemble", "evaluate")


def _skip_existing(out: Path, stage: str, force: bool) -> bool:
    """True (and says so) when the stage's output ``out`` is there and ``--force`` was not given."""
    if out.exists() and not force:
        print(f"[{stage}] exists, skipping: {out}")
        return True
    return False


def _codec_source(
    c: DictConfig, stage: str, init_from: str | None
) -> tuple[EncodecModel | None, EncodecConfig]:
    """The trained codec to start from (None: a fresh one) and the config of the codec to train.
    ``init_from``: a MusicGen folder (its audio_encoder) or an EncodecModel folder."""
    widen = c.get("widen", 1)
    if not init_from:
        if widen != 1:
            raise ValueError(f"{stage}.widen widens a trained codec; set {stage}.init_from or drop widen")
        return None, make_encodec_config(**{k: c[k] for k in CODEC_SIZE_KEYS})
    if AutoConfig.from_pretrained(init_from).model_type == "musicgen":
        source = MusicgenForConditionalGeneration.from_pretrained(init_from).audio_encoder
    else:
        source = EncodecModel.from_pretrained(init_from)
    if widen != 1:  # more decoder width, same codes: see steerlit.testbed.widen
        source = widen_encodec(source, widen)
        print(f"[{stage}] widened to num_filters={source.config.num_filters}")
    return source, source.config


def _codec_module(cfg: DictConfig, c: DictConfig, enc_cfg: EncodecConfig) -> CodecModule:
    """A fresh :class:`~steerlit.testbed.codec.CodecModule` with options ``c``, adversarial
    (manual optimisation: it clips its own gradients) when ``c.w_adv`` is set."""
    module_cls, options = CodecModule, given_options(c, *CODEC_MODULE_OPTIONS)
    if c.get("w_adv", 0):
        module_cls = AdversarialCodecModule
        options.update(given_options(c, *ADVERSARIAL_OPTIONS, "grad_clip"))
    return module_cls(
        enc_cfg.to_dict(),
        lr=c.lr,
        log_audio_every=c.log_audio_every if cfg.logger != "none" else 0,
        **options,
    )


def _fit_codec(cfg: DictConfig, c: DictConfig, stage: str, out: Path, init_from: str | None) -> Path:
    """Train a :class:`~steerlit.testbed.codec.CodecModule` with options ``c`` (optionally starting
    from a trained codec) and save its stock ``EncodecModel`` to ``out``."""
    source, enc_cfg = _codec_source(c, stage, init_from)
    torch.manual_seed(cfg.seed)
    module = _codec_module(cfg, c, enc_cfg)
    if source is not None:
        init_from_encodec(module, source)
        print(f"[{stage}] initialised from {init_from}")
    data = DataLoader(
        ClipCropDataset(
            cfg.data.train_clips, c.crop_s, cfg.data.base_seed, cfg.seed, c.get("stem_prob", 0.0)
        ),
        batch_size=c.batch_size,
    )
    trainer, ckpt_dir = stage_trainer(cfg, c, stage, clip_gradients=module.automatic_optimization)
    t0 = time.time()
    fit_resuming(trainer, module, data, ckpt_dir)
    encodec = export_encodec(module)
    encodec.save_pretrained(out)
    save_train_stats(trainer, t0, out, stage, params=sum(p.numel() for p in encodec.parameters()))
    finish_wandb()
    return out


def stage_codec(cfg: DictConfig, force: bool = False) -> Path:
    """Train the codec; returns the folder of the exported ``EncodecModel``."""
    out = Path(cfg.run_dir) / "codec" / "encodec"
    if _skip_existing(out, "codec", force):
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
    if _skip_existing(out, "codec_decoder", force):
        return out
    c = OmegaConf.merge(cfg.codec_decoder, {"decoder_only": True})
    return _fit_codec(cfg, c, "codec_decoder", out, str(Path(cfg.run_dir) / "codec" / "encodec"))


def stage_codes(cfg: DictConfig, force: bool = False) -> Path:
    """Render, caption and encode the training clips once; returns the cache file."""
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


def _lm_tokenizer(cfg: DictConfig):
    """The LM's tokenizer: the one saved in ``run_dir/lm/tokenizer``, else one trained on the captions
    (and saved there)."""
    tok_dir = Path(cfg.run_dir) / "lm" / "tokenizer"
    if tok_dir.exists():
        return AutoTokenizer.from_pretrained(tok_dir)
    tokenizer = build_t5_tokenizer(
        training_corpus(),
        vocab_size=cfg.lm.text_vocab_size,
        word_level=cfg.lm.get("word_tokenizer", False),
    )
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def _init_lm_from(module: MusicgenLM, lm: DictConfig) -> None:
    """Load ``lm.init_from`` (a Lightning checkpoint of this stage, e.g. of an earlier run; weights only)
    into ``module``, leaving the parts named in ``lm.init_skip`` (e.g. ``[text_encoder]``) fresh."""
    state = torch.load(lm.init_from, map_location="cpu", weights_only=True)["state_dict"]
    skip = tuple(f"model.{p}" for p in lm.get("init_skip", []))
    missing, unexpected = module.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith(skip)}, strict=not skip
    )
    if unexpected or any(not k.startswith(skip) for k in missing):
        raise ValueError(f"lm.init_from {lm.init_from}: missing {missing}, unexpected {unexpected}")
    print(f"[lm] initialised from {lm.init_from} (kept fresh: {list(skip) or 'nothing'})")


def stage_lm(cfg: DictConfig, force: bool = False) -> Path:
    """Train the text encoder + MusicGen decoder on the cached codes; returns the model folder."""
    out = Path(cfg.run_dir) / "lm" / "model"
    if _skip_existing(out, "lm", force):
        return out
    tokenizer = _lm_tokenizer(cfg)
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
        LMTraining.from_config(cfg.lm),
        log_audio_every=cfg.lm.log_audio_every if cfg.logger != "none" else 0,
        tokenizer=tokenizer,
    )
    if cfg.lm.get("init_from"):
        _init_lm_from(module, cfg.lm)
    trainer, ckpt_dir = stage_trainer(cfg, cfg.lm, "lm")
    t0 = time.time()
    fit_resuming(trainer, module, data, ckpt_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_train_stats(trainer, t0, out, "lm")
    finish_wandb()
    return out


def pretrain_text_encoder(cfg: DictConfig, model, tokenizer, force: bool = False) -> None:
    """Pre-train ``model.text_encoder`` in place on caption -> clip attributes
    (:mod:`steerlit.testbed.text_pretrain`); cached in ``run_dir/lm/text_encoder``. Prints the
    held-out readout (captions of held-out clips) so that one sees what the features carry."""
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
    trainer, _ = stage_trainer(cfg, stage_cfg, "text")
    trainer.fit(module, data)  # no resume: a few minutes at most
    report = readout_report(module, tokenizer, base_seed=cfg.data.heldout_base_seed)
    print(f"[lm] text encoder pre-trained: {report}")
    module.text_encoder.save_pretrained(out)
    atomic_write_text(out / "readout.json", json.dumps(report, indent=2))
    finish_wandb()


def stage_assemble(cfg: DictConfig, force: bool = False) -> Path:
    """Write model + processor + probes + model card into ``out_dir``."""
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
    out = Path(cfg.out_dir)
    ev = cfg.get("eval", {})
    results = evaluate(
        out,
        ev.get("n_clips", 40),
        ev.get("n_prompts", 16),
        cfg.data.heldout_base_seed,
        tuple(ev.get("seeds", PROMPT_SEEDS)),
    )
    atomic_write_text(out / "eval.json", json.dumps(results, indent=2))  # the shipped format
    write_model_card(out, cfg, MusicgenForConditionalGeneration.from_pretrained(out))
    print(f"[evaluate] wrote {out / 'eval.json'}")
    return out


STAGE_FUNCTIONS = {
    "codec": stage_codec,
    "codes": stage_codes,
    "codec_decoder": stage_codec_decoder,
    "lm": stage_lm,
    "assemble": stage_assemble,
    "evaluate": stage_evaluate,
}


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
    atomic_write_text(Path(cfg.run_dir) / "config.yaml", OmegaConf.to_yaml(cfg))
    for stage in args.stages.split(","):
        STAGE_FUNCTIONS[stage.strip()](cfg, force=args.force)


if __name__ == "__main__":
    main()
