"""The LM's training data: the training clips rendered, captioned and encoded once into a code cache.

The cache (``cache_dir/codes.pt``, written by the ``codes`` stage of :mod:`steerlit.testbed.train`) is
``{"codes": (N, K, T) int16, "captions": [N], "specs": [N dicts], "clip_s", "render_sha256"}``;
:func:`code_cache_matches` says whether it still holds the configured clips as the synth renders them
now, and :class:`CodeDataset` serves it to the LM (loaded weights-only).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import EncodecModel

from steerlit.files import atomic_path
from steerlit.testbed.captions import caption_for, training_captions
from steerlit.testbed.codec import encode_codes
from steerlit.testbed.synth import ClipSpec, render, spec_for_index


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
    with atomic_path(cache_path) as tmp:  # an interrupted run never leaves a truncated cache
        torch.save(data, tmp)
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
