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

import dataclasses
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from transformers import (
    EncodecModel,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)
from transformers.modeling_outputs import BaseModelOutput

from steerlit.testbed.synth import SAMPLE_RATE
from steerlit.testbed.train_config import LM_MODULE_OPTIONS, LM_TRAINING_KEYS, given_options


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


@dataclasses.dataclass(frozen=True)
class LMTraining:
    """How :class:`MusicgenLM` trains: AdamW with ``lr`` after ``warmup_steps`` linear steps, cosine decay
    to a tenth over ``max_steps``; condition dropout (``cond_dropout``); the first ``prefix_frames``
    positions weighted ``prefix_weight`` times in the loss; whole audio-context frames hidden with
    probability ``input_dropout``; ``freeze_text_encoder`` keeps the text encoder fixed (and in eval mode)."""

    lr: float = 6e-4
    warmup_steps: int = 150
    max_steps: int = 4000
    cond_dropout: float = 0.15
    weight_decay: float = 0.01
    prefix_frames: int = 0
    prefix_weight: float = 1.0
    input_dropout: float = 0.0
    freeze_text_encoder: bool = False

    @classmethod
    def from_config(cls, lm: DictConfig) -> LMTraining:
        """From the ``lm`` config section: it must set ``LM_TRAINING_KEYS`` and may set ``LM_MODULE_OPTIONS``
        (``weight_decay`` is not a config key: its default holds)."""
        return cls(**{k: lm[k] for k in LM_TRAINING_KEYS}, **given_options(lm, *LM_MODULE_OPTIONS))


class MusicgenLM(L.LightningModule):
    """Trains text encoder + decoder of a ``MusicgenForConditionalGeneration``; EnCodec frozen.

    Batch: {"codes": (B, K, T), "input_ids": (B, S), "attention_mask": (B, S)}. The hyperparameters
    (``self.hparams``) are the fields of ``training`` (:class:`LMTraining`) and ``log_audio_every``.
    """

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        training: LMTraining | None = None,
        *,
        log_audio_every: int = 0,
        tokenizer=None,
    ):
        super().__init__()
        training = training or LMTraining()
        self.save_hyperparameters({**dataclasses.asdict(training), "log_audio_every": log_audio_every})
        self.model, self.tokenizer = model, tokenizer
        frozen = [self.model.audio_encoder] + (
            [self.model.text_encoder] if training.freeze_text_encoder else []
        )
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
        import wandb  # deferred: wandb (optional, heavy)

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
