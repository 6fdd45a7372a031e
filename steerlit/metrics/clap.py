"""Optional CLAP text-audio scores: prompt adherence (cosine) and an embedding FAD.

Loads a transformers ``ClapModel`` + ``ClapProcessor`` from a local folder only (no downloads).
Get a checkpoint once on a machine with network access::

    hf download laion/clap-htsat-unfused --local-dir checkpoints/clap-htsat-unfused

and point the config key ``metrics.clap_path`` at that folder.

Clips longer than the feature extractor's window (10 s for LAION CLAP) are split into evenly
spaced windows covering the whole clip and their embeddings averaged, so scores are
deterministic (the extractor would otherwise take a random crop).

Shapes: audio clips are mono float ``(samples_i,)``; embeddings are L2-normalised
``(num_clips, projection_dim)`` float32 numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steerlit.metrics.audio_input import as_clip_list, check_sample_rate
from steerlit.metrics.numba_cache import import_librosa
from steerlit.metrics.quality import feature_stats, frechet_distance

CLAP_HINT = (
    "Download a CLAP checkpoint once with network access, e.g. "
    "`hf download laion/clap-htsat-unfused --local-dir checkpoints/clap-htsat-unfused`, "
    "and set the config key `metrics.clap_path` to that folder."
)


def _pooled(out: Any):
    """``get_*_features`` returns a tensor (transformers 4.x) or an output with ``pooler_output`` (5.x)."""
    return out if hasattr(out, "dim") else out.pooler_output


class ClapScorer:
    """CLAP embeddings and scores from a local checkpoint folder.

    Args:
        path: folder with ``config.json``, the model weights and the processor files
            (tokenizer + ``preprocessor_config.json``), as written by ``save_pretrained``.
        device: torch device for the model.
        batch_size: clips / texts per forward pass.

    Raises:
        ValueError: if ``path`` is not an existing folder (the message says how to get one).
    """

    def __init__(self, path: str | Path, device: str = "cpu", *, batch_size: int = 16):
        import torch
        from transformers import ClapModel, ClapProcessor

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"CLAP checkpoint folder not found: {str(path)!r}. {CLAP_HINT}")
        if not (folder / "config.json").is_file():
            raise ValueError(f"CLAP checkpoint folder {str(path)!r} has no config.json. {CLAP_HINT}")
        self.path = folder
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
        self.model = ClapModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()

    @property
    def sampling_rate(self) -> int:
        """Sample rate the feature extractor expects (48 kHz for LAION CLAP)."""
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        """Window length in samples at :attr:`sampling_rate`."""
        fe = self.processor.feature_extractor
        return int(getattr(fe, "nb_max_samples", 10 * self.sampling_rate))

    def _windows(self, clip: np.ndarray) -> list[np.ndarray]:
        n, win = clip.size, self.max_samples
        if n <= win:
            return [clip]
        count = math.ceil(n / win)
        starts = np.linspace(0, n - win, count).round().astype(int)
        return [clip[s : s + win] for s in starts]

    def audio_embeddings(self, audios: Sequence[np.ndarray] | Any, sr: int) -> np.ndarray:
        """L2-normalised audio embeddings ``(num_clips, D)``.

        Args:
            audios: list of mono clips ``(samples_i,)`` or a batch ``(B, samples)``.
            sr: their sample rate; they are resampled with librosa to :attr:`sampling_rate`.
        """
        import torch

        check_sample_rate(sr)
        clips = as_clip_list(audios)
        librosa = import_librosa()
        target = self.sampling_rate
        windows: list[np.ndarray] = []
        owner: list[int] = []
        for i, clip in enumerate(clips):
            if int(sr) != target:
                clip = librosa.resample(clip, orig_sr=int(sr), target_sr=target)
            if clip.size == 0:
                raise ValueError(f"clip {i} is empty")
            for w in self._windows(clip):
                windows.append(np.ascontiguousarray(w, dtype=np.float32))
                owner.append(i)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(windows), self.batch_size):
                inputs = self.processor.feature_extractor(
                    windows[start : start + self.batch_size], sampling_rate=target, return_tensors="pt"
                )
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                chunks.append(_pooled(self.model.get_audio_features(**inputs)).float().cpu())
        emb = torch.cat(chunks).numpy().astype(np.float64)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        owner_a = np.asarray(owner)
        out = np.stack([emb[owner_a == i].mean(axis=0) for i in range(len(clips))])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings ``(num_texts, D)``."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        tok = self.processor.tokenizer
        # RoBERTa-style position ids start at pad_token_id + 1, so two positions are unusable.
        max_len = int(self.model.config.text_config.max_position_embeddings) - 2
        max_len = min(max_len, int(getattr(tok, "model_max_length", max_len) or max_len))
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                inputs = tok(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_len,
                    return_tensors="pt",
                )
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                chunks.append(_pooled(self.model.get_text_features(**inputs)).float().cpu())
        emb = torch.cat(chunks).numpy()
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32)

    def clap_score(self, audios: Sequence[np.ndarray] | Any, sr: int, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each clip with its text, ``(num_clips,)`` in [-1, 1].

        ``texts`` has one entry per clip, or a single string used for every clip.
        """
        a = self.audio_embeddings(audios, sr)
        texts = [texts] * len(a) if isinstance(texts, str) else list(texts)
        if len(texts) != len(a):
            raise ValueError(f"need one text per clip: {len(a)} clips, {len(texts)} texts")
        t = self.text_embeddings(texts)
        return np.clip(np.sum(a.astype(np.float64) * t, axis=1), -1.0, 1.0)

    def embedding_fad(
        self, set_a: Sequence[np.ndarray] | Any, set_b: Sequence[np.ndarray] | Any, sr: int
    ) -> float:
        """Frechet distance between the CLAP audio embeddings of two sets (each >= 2 clips)."""
        mu_a, sig_a = feature_stats(self.audio_embeddings(set_a, sr))
        mu_b, sig_b = feature_stats(self.audio_embeddings(set_b, sr))
        return frechet_distance(mu_a, sig_a, mu_b, sig_b)
