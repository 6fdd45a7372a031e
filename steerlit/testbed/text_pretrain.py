"""Pre-training the testbed's T5 text encoder to read clip attributes from captions.

Trained jointly from scratch, the text encoder of the testbed got ~40x smaller gradients than the
decoder, and the decoder learned to predict codes from the audio context alone: swapping captions
changed its loss by < 0.5%. Here the encoder is first trained on its own to predict, from a caption,
the attributes of the clip it describes (:data:`TARGETS`): tempo and brightness on a [0, 1] scale
(captions that leave them unsaid can only predict the middle), instrument family and groove. Every
token state then carries the caption's attributes (a mean-pool reads them), so any attention
pattern of the decoder's cross-attention already sees them, and the decoder can learn to use the
text from its first steps. ``lm.freeze_text_encoder`` then keeps these features fixed.

Batch: {"input_ids": (B, S), "attention_mask": (B, S), "bpm01": (B,), "bright01": (B,),
"instrument": (B,), "pattern": (B,)}.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from steerlit.testbed.captions import BRIGHT_WORDS, TEMPO_WORDS, caption_for
from steerlit.testbed.synth import BPM_RANGE, INSTRUMENTS, PATTERNS, spec_for_index

TARGETS = ("bpm01", "bright01", "instrument", "pattern")


class CaptionAttributeDataset(IterableDataset):
    """Endless (caption, attributes) of training clips: fresh caption draws of clip specs."""

    def __init__(self, num_clips: int, base_seed: int = 0, seed: int = 0):
        self.specs = [spec_for_index(i, base_seed) for i in range(num_clips)]
        self.seed = seed

    def __iter__(self):
        rng = np.random.default_rng([self.seed, 4242])
        lo, hi = BPM_RANGE
        while True:
            s = self.specs[int(rng.integers(len(self.specs)))]
            yield {
                "caption": caption_for(s, rng),
                "bpm01": (s.bpm - lo) / (hi - lo),
                "bright01": s.brightness,
                "instrument": INSTRUMENTS.index(s.instrument),
                "pattern": PATTERNS.index(s.pattern),
            }


def collate_captions(tokenizer):
    def collate(items: list[dict]) -> dict:
        tok = tokenizer([it["caption"] for it in items], padding=True, return_tensors="pt")
        out = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
        out["bpm01"] = torch.tensor([it["bpm01"] for it in items], dtype=torch.float32)
        out["bright01"] = torch.tensor([it["bright01"] for it in items], dtype=torch.float32)
        out["instrument"] = torch.tensor([it["instrument"] for it in items])
        out["pattern"] = torch.tensor([it["pattern"] for it in items])
        return out

    return collate


class TextAttributeModule(L.LightningModule):
    """A T5 encoder with linear heads on its mean-pooled states, trained on :data:`TARGETS`.

    Loss = MSE(bpm01) + MSE(bright01) (each x 10, so that the scalar attributes weigh about as much
    as the classes) + CE(instrument) + CE(pattern). Only the encoder is kept afterwards.
    """

    def __init__(self, text_encoder: nn.Module, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters(ignore=["text_encoder"])
        self.text_encoder = text_encoder
        d = text_encoder.config.d_model
        self.heads = nn.ModuleDict(
            {
                "bpm01": nn.Linear(d, 1),
                "bright01": nn.Linear(d, 1),
                "instrument": nn.Linear(d, len(INSTRUMENTS)),
                "pattern": nn.Linear(d, len(PATTERNS)),
            }
        )

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states over the mask: (B, S) -> (B, d_model)."""
        h = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        z = self.pooled(batch["input_ids"], batch["attention_mask"])
        out = {k: 10 * F.mse_loss(self.heads[k](z)[:, 0], batch[k]) for k in ("bpm01", "bright01")}
        out.update({k: F.cross_entropy(self.heads[k](z), batch[k]) for k in ("instrument", "pattern")})
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        loss = sum(parts.values())
        self.log("text/loss", loss, prog_bar=True)
        self.log_dict({f"text/{k}": v for k, v in parts.items()})
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)


@torch.no_grad()
def attribute_readout(module: TextAttributeModule, captions: list[str], tokenizer) -> dict[str, np.ndarray]:
    """Head outputs for ``captions``: bpm01/bright01 (N,) and the argmax class indices (N,)."""
    module.eval()
    tok = tokenizer(captions, padding=True, return_tensors="pt")
    z = module.pooled(tok["input_ids"], tok["attention_mask"])
    return {
        k: (module.heads[k](z)[:, 0] if k in ("bpm01", "bright01") else module.heads[k](z).argmax(-1)).numpy()
        for k in TARGETS
    }


def readout_report(module: TextAttributeModule, tokenizer, n: int = 400, base_seed: int = 1) -> dict:
    """How well the pre-trained features carry the attributes, on captions of ``n`` held-out clips:
    instrument/pattern accuracy, and for captions that name a tempo (brightness) pole the share whose
    predicted bpm01 (bright01) lies on that pole's side of 0.5."""
    rng = np.random.default_rng([base_seed, 99])
    specs = [spec_for_index(i, base_seed) for i in range(n)]
    captions = [caption_for(s, rng) for s in specs]
    pred = attribute_readout(module, captions, tokenizer)
    out = {
        "instrument_acc": float(
            np.mean(pred["instrument"] == [INSTRUMENTS.index(s.instrument) for s in specs])
        ),
        "pattern_acc": float(np.mean(pred["pattern"] == [PATTERNS.index(s.pattern) for s in specs])),
    }
    for name, key, words in (("tempo", "bpm01", TEMPO_WORDS), ("brightness", "bright01", BRIGHT_WORDS)):
        (_, hi_words), (_, lo_words) = words.items()
        hits = []
        for c, p in zip(captions, pred[key]):
            tokens = set(c.replace(",", " ").split())
            if tokens & set(hi_words):
                hits.append(p > 0.5)
            elif tokens & set(lo_words):
                hits.append(p < 0.5)
        out[f"{name}_pole_acc"] = float(np.mean(hits)) if hits else float("nan")
    return out
