"""Training the testbed's MusicGen (T5 text encoder + MusicGen decoder) on cached codec codes.

The text encoder is a small T5: nothing pretrained can be downloaded here, and a frozen random
encoder would leave synonyms ("fast", "upbeat", "driving") unrelated. Either it is trained jointly
with the decoder, or (``lm.text_pretrain_steps``) first pre-trained to read the clip attributes from
captions (:mod:`steerlit.testbed.text_pretrain`) and then frozen (``freeze_text_encoder``): trained
jointly from scratch, the decoder learned to ignore the text.
The EnCodec audio encoder is frozen (it only decodes codes to audio at generation time).

Inputs follow MusicGen's delay pattern exactly as ``generate`` builds it: for codes ``(B, K, T)``
the delayed sequence has length ``T + K``: position 0 is BOS for all codebooks, frame ``t`` of
codebook ``k`` sits at position ``t + 1 + k``, everything else is the pad/BOS id (= codebook size).
The decoder reads positions ``[0, T+K-1)`` and predicts positions ``[1, T+K)``; pad positions
are ignored by the loss. Condition dropout zeroes the text encoder states *and* the attention mask
of a fraction of the examples, as ``generate`` does for the unconditional half of guidance.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import (
    EncodecFeatureExtractor,
    EncodecModel,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
)
from transformers.modeling_outputs import BaseModelOutput

from steerlit.testbed.captions import caption_for, training_captions
from steerlit.testbed.codec import encode_codes
from steerlit.testbed.synth import SAMPLE_RATE, ClipSpec, render, spec_for_index


@torch.no_grad()
def build_code_cache(
    encodec_dir: str | Path,
    cache_path: str | Path,
    num_clips: int,
    base_seed: int = 0,
    clip_s: float = 4.0,
    seed: int = 0,
    batch_size: int = 32,
) -> dict:
    """Render ``num_clips`` training clips, encode them with the stock EnCodec and save
    ``{"codes": (N, K, T) int16, "captions": [N], "specs": [N dicts]}`` to ``cache_path``."""
    encodec = EncodecModel.from_pretrained(encodec_dir).eval()
    specs = [spec_for_index(i, base_seed) for i in range(num_clips)]
    codes = []
    for start in tqdm(range(0, num_clips, batch_size), desc="render + encode clips", unit="batch"):
        wav = np.stack([render(s, clip_s) for s in specs[start : start + batch_size]])
        codes.append(encode_codes(encodec, torch.from_numpy(wav)[:, None]).to(torch.int16))
    data = {
        "codes": torch.cat(codes),
        "captions": training_captions(num_clips, base_seed, seed),
        "specs": [s.to_dict() for s in specs],
        "clip_s": float(clip_s),
        "render_sha256": render_fingerprint(specs, clip_s),
    }
    cache_path = Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.tmp")
    torch.save(data, tmp)
    tmp.replace(cache_path)  # atomic: an interrupted run never leaves a truncated cache
    return data


def render_fingerprint(specs: list[ClipSpec], clip_s: float, n: int = 4) -> str:
    """sha256 of the first ``n`` clips as the synth renders them now: a change of the synth that keeps
    the specs (e.g. the pitched part's note values) changes it. A few milliseconds."""
    digest = hashlib.sha256()
    for spec in specs[:n]:
        digest.update(render(spec, clip_s).tobytes())
    return digest.hexdigest()


def code_cache_matches(
    cache_path: str | Path, num_clips: int, base_seed: int = 0, clip_s: float = 4.0
) -> bool:
    """True if the cache holds exactly the clips ``spec_for_index(0..num_clips-1, base_seed)`` as the
    synth renders them now, at ``clip_s`` seconds: a changed ``train_clips``, seed, clip length, synth
    sampling (e.g. its BPM range) or synth rendering makes a cache stale even when it is newer than the
    codec. Caches written before the rendering fingerprint existed count as stale."""
    data = torch.load(cache_path, weights_only=True)
    specs = [spec_for_index(i, base_seed) for i in range(num_clips)]
    return (
        len(data["specs"]) == num_clips
        and all(s == spec.to_dict() for s, spec in zip(data["specs"], specs))
        and data.get("clip_s") == float(clip_s)
        and data.get("render_sha256") == render_fingerprint(specs, clip_s)
    )


class CodeDataset(Dataset):
    """Cached clips. Items: (codes (K, T) int64, caption str).

    With ``recaption=True`` every access draws a fresh caption of the clip's spec (new synonyms,
    template and attribute drops), a cheap text augmentation; otherwise the cached caption is used.
    """

    def __init__(self, cache_path: str | Path, tokenizer, seed: int = 0, recaption: bool = True):
        data = torch.load(cache_path, weights_only=True)
        self.codes, self.captions, self.tokenizer = data["codes"], data["captions"], tokenizer
        self.specs = [ClipSpec(**s) for s in data["specs"]]
        self.recaption, self.rng = recaption, np.random.default_rng([seed, 777])

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        caption = caption_for(self.specs[i], self.rng) if self.recaption else self.captions[i]
        return self.codes[i].long(), caption

    def collate(self, items) -> dict:
        """-> {"codes": (B, K, T), "input_ids": (B, S), "attention_mask": (B, S)}."""
        codes = torch.stack([c for c, _ in items])
        tok = self.tokenizer([t for _, t in items], padding=True, return_tensors="pt")
        return {"codes": codes, "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}


def delay_inputs_and_labels(codes: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Delay-pattern inputs and labels from codes (B, K, T).

    Returns ``input_ids`` (B*K, T+K-1) as ``generate`` feeds the decoder and ``labels``
    (B, K, T+K-1) with -100 where the target is a pad/BOS position.
    """
    b, k, t = codes.shape
    seq = torch.full((b, k, t + k), pad_id, dtype=torch.long, device=codes.device)
    for i in range(k):
        seq[:, i, i + 1 : i + 1 + t] = codes[:, i]
    inputs = seq[:, :, :-1].reshape(b * k, t + k - 1)
    labels = seq[:, :, 1:].masked_fill(seq[:, :, 1:] == pad_id, -100)
    return inputs, labels


def build_musicgen(
    cfg: DictConfig, encodec_dir: str | Path, text_vocab_size: int
) -> MusicgenForConditionalGeneration:
    """A fresh MusicGen whose audio encoder is the trained EnCodec in ``encodec_dir``."""
    encodec = EncodecModel.from_pretrained(encodec_dir)
    ac = encodec.config
    lm = cfg.lm
    text = T5Config(
        vocab_size=text_vocab_size,
        d_model=lm.text_d_model,
        d_kv=lm.text_d_model // lm.text_heads,
        d_ff=lm.text_d_ff,
        num_layers=lm.text_layers,
        num_heads=lm.text_heads,
        relative_attention_num_buckets=16,
        dropout_rate=lm.dropout,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=ac.codebook_size,
        max_position_embeddings=1024,
        num_hidden_layers=lm.num_layers,
        ffn_dim=lm.ffn_dim,
        num_attention_heads=lm.num_heads,
        hidden_size=lm.hidden_size,
        dropout=lm.dropout,
        num_codebooks=ac.num_quantizers,
        pad_token_id=ac.codebook_size,
        bos_token_id=ac.codebook_size,
        decoder_start_token_id=ac.codebook_size,
        audio_channels=1,
    )
    config = MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=ac.to_dict(), decoder=decoder.to_dict()
    )
    model = MusicgenForConditionalGeneration(config)
    model.audio_encoder.load_state_dict(encodec.state_dict())
    set_generation_defaults(model, cfg)
    return model


def set_generation_defaults(model: MusicgenForConditionalGeneration, cfg: DictConfig) -> None:
    gen, dec = model.generation_config, model.config.decoder
    gen.do_sample = True
    gen.guidance_scale = float(cfg.generation.guidance_scale)
    gen.top_k = int(cfg.generation.top_k)
    gen.max_length = int(cfg.generation.max_length)
    gen.decoder_start_token_id = dec.decoder_start_token_id
    gen.pad_token_id = dec.pad_token_id
    gen.bos_token_id = dec.bos_token_id


class MusicgenLM(L.LightningModule):
    """Trains text encoder + decoder of a ``MusicgenForConditionalGeneration``; EnCodec frozen.

    Batch: {"codes": (B, K, T), "input_ids": (B, S), "attention_mask": (B, S)}.
    """

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        lr: float = 6e-4,
        warmup_steps: int = 150,
        max_steps: int = 4000,
        cond_dropout: float = 0.15,
        weight_decay: float = 0.01,
        log_audio_every: int = 0,
        tokenizer=None,
        prefix_frames: int = 0,
        prefix_weight: float = 1.0,
        input_dropout: float = 0.0,
        freeze_text_encoder: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.model, self.tokenizer = model, tokenizer
        frozen = [self.model.audio_encoder] + ([self.model.text_encoder] if freeze_text_encoder else [])
        for part in frozen:
            for p in part.parameters():
                p.requires_grad_(False)
        self.train(self.training)  # frozen parts to eval now: Lightning's fit keeps submodule modes as set

    def train(self, mode: bool = True):
        """A frozen text encoder stays in eval mode (fixed features: no dropout either)."""
        super().train(mode)
        if self.hparams.freeze_text_encoder:
            self.model.text_encoder.eval()
        return self

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and the plain per-codebook cross-entropies (K,).

        The loss is the mean over codebooks of the cross-entropy, with the first ``prefix_frames``
        positions weighted ``prefix_weight`` times: only at the start of a clip does the text alone
        decide the tempo (later frames can copy the period from the context), so this strengthens
        the gradient that teaches the decoder to read tempo words. With the defaults it is plain CE.
        """
        codes, ids, mask = batch["codes"], batch["input_ids"], batch["attention_mask"]
        pad = self.model.config.decoder.pad_token_id
        inputs, labels = delay_inputs_and_labels(codes, pad)
        if self.training and self.hparams.input_dropout > 0:
            # Hide whole frames of the audio context (all codebooks -> pad) so that the context alone
            # cannot carry the prediction and the decoder has to read the text.
            b, k = codes.shape[:2]
            hide = torch.rand(b, 1, inputs.shape[-1], device=inputs.device) < self.hparams.input_dropout
            inputs = inputs.view(b, k, -1).masked_fill(hide, pad).view(b * k, -1)
        states = self.model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.training and self.hparams.cond_dropout > 0:
            keep = (torch.rand(ids.shape[0], device=ids.device) >= self.hparams.cond_dropout).to(states.dtype)
            states = states * keep[:, None, None]
            mask = mask * keep[:, None].to(mask.dtype)
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask,
            decoder_input_ids=inputs,
        )
        b, k, s = labels.shape
        logits = out.logits.view(b, k, s, -1)
        ce = F.cross_entropy(logits.reshape(b * k * s, -1), labels.reshape(-1), reduction="none").view(
            b, k, s
        )
        valid = (labels != -100).to(ce.dtype)
        per_cb = (ce * valid).sum((0, 2)) / valid.sum((0, 2)).clamp_min(1)
        hp = self.hparams
        if hp.prefix_frames and hp.prefix_weight != 1.0:
            w = torch.ones(s, dtype=ce.dtype, device=ce.device)
            w[: hp.prefix_frames] = hp.prefix_weight
            weighted = (ce * valid * w).sum((0, 2)) / (valid * w).sum((0, 2)).clamp_min(1)
            return weighted.mean(), per_cb.detach()
        return per_cb.mean(), per_cb

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, per_cb = self.loss(batch)
        self.log("lm/loss", loss, prog_bar=True)
        self.log_dict({f"lm/ce_cb{i}": v for i, v in enumerate(per_cb)})
        hp = self.hparams
        if hp.log_audio_every and self.global_step > 0 and self.global_step % hp.log_audio_every == 0:
            self._log_audio()
        return loss

    @torch.no_grad()
    def _log_audio(
        self,
        prompts: tuple[str, ...] = (
            "fast bright synth bass over a dance beat",
            "slow dark organ chords with a backbeat",
        ),
    ) -> None:
        logger = self.logger
        if (
            self.tokenizer is None
            or logger is None
            or not hasattr(getattr(logger, "experiment", None), "log")
        ):
            return
        import wandb

        was_training = self.model.training
        self.model.eval()
        tok = self.tokenizer(list(prompts), padding=True, return_tensors="pt")
        audio = self.model.generate(**tok, max_new_tokens=203, do_sample=True, guidance_scale=3.0)
        logger.experiment.log(
            {
                **{
                    f"lm/sample_{i}": wandb.Audio(
                        audio[i, 0].float().cpu().numpy(), sample_rate=SAMPLE_RATE, caption=p
                    )
                    for i, p in enumerate(prompts)
                },
                "trainer/global_step": self.global_step,
            }
        )
        self.model.train(was_training)

    def configure_optimizers(self):
        params = [
            p
            for n, p in self.model.named_parameters()
            if p.requires_grad and not n.startswith("audio_encoder")
        ]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=(0.9, 0.95),
        )
        warm, total = self.hparams.warmup_steps, max(self.hparams.max_steps, 1)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def assemble(
    lm_dir: str | Path,
    out_dir: str | Path,
    cfg: DictConfig,
    extra_files: dict[str, Path] | None = None,
    decoder_from: str | Path | None = None,
) -> Path:
    """Save model (fp32 safetensors) + ``MusicgenProcessor`` (tokenizer + feature extractor) + card.

    Atomic: everything is written to a hidden sibling folder that then replaces ``out_dir`` whole, so
    a crash never leaves a half-written model, and files of a previous model (its ``eval.json``,
    its ``directions/``) never sit next to the new weights. ``extra_files`` ({name: source}) are
    copied in before the card is written (e.g. the training stats it quotes). ``decoder_from``: an
    ``EncodecModel`` folder whose decoder replaces the model's codec decoder; its encoder and
    codebooks must equal the model's (they made the LM's training codes), or its widening
    (:func:`~steerlit.testbed.widen.with_tuned_decoder`), else ``ValueError``.
    """
    import shutil

    from transformers import AutoTokenizer

    from steerlit.testbed.model_card import write_model_card

    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(f".{out_dir.name}.tmp"), out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, src in (extra_files or {}).items():
        shutil.copy(src, tmp / name)
    model = MusicgenForConditionalGeneration.from_pretrained(lm_dir)
    if decoder_from is not None:
        from steerlit.testbed.widen import with_tuned_decoder

        model.audio_encoder = with_tuned_decoder(
            model.audio_encoder, EncodecModel.from_pretrained(decoder_from)
        )
        model.config.audio_encoder = model.audio_encoder.config
    set_generation_defaults(model, cfg)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    fe = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=model.config.audio_encoder.sampling_rate, padding_value=0.0
    )
    processor = MusicgenProcessor(feature_extractor=fe, tokenizer=tokenizer)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    OmegaConf.save(cfg, tmp / "training_config.yaml")
    write_model_card(tmp, cfg, model)
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
