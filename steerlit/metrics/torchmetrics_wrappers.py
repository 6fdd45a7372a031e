"""torchmetrics ``Metric`` wrappers so attribute metrics aggregate correctly under DDP.

All states are sums (``dist_reduce_fx="sum"``) of float64 tensors, so the value computed after
synchronising ranks equals the value over the union of every rank's updates. The audio work
(librosa) runs on the CPU inside ``update``; only the small states live on the metric's device.

Batches of audio are lists of mono clips ``(samples_i,)`` or arrays/tensors ``(B, samples)``
(``(B, channels, samples)`` is averaged to mono).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from steerlit.metrics.attributes import ATTRIBUTE_NAMES, compute_attribute
from steerlit.metrics.audio_input import as_clip_list
from steerlit.metrics.quality import N_BANDS, N_MFCC, dsp_features, frechet_distance
from steerlit.metrics.tempo import estimate_tempo, tempo_accuracy1, tempo_accuracy2

_F64 = torch.float64


def _nan() -> torch.Tensor:
    return torch.tensor(float("nan"), dtype=_F64)


class TempoAccuracy(Metric):
    """Fraction of clips whose estimated tempo matches the target (MIREX Accuracy1 or 2).

    Args:
        target_bpm: default target for every clip (may be overridden per update with ``target``).
        tol: relative tolerance (0.04 = 4%).
        octave_aware: ``True`` for Accuracy2 (x2, x3, x1/2, x1/3 also count), else Accuracy1.
        tempo_kwargs: passed to :func:`~steerlit.metrics.tempo.estimate_tempo`.

    ``update(audios, sr)`` estimates tempi from audio; ``update(bpm=..., target=...)`` takes
    estimates ``(B,)`` directly. A ``nan`` estimate (silent clip) counts as a miss.
    ``compute()`` returns a float64 scalar tensor (``nan`` before any update).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        target_bpm: float | None = None,
        tol: float = 0.04,
        octave_aware: bool = True,
        *,
        tempo_kwargs: dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_bpm = target_bpm
        self.tol = float(tol)
        self.octave_aware = bool(octave_aware)
        self.tempo_kwargs = dict(tempo_kwargs or {})
        self.add_state("correct", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")

    def update(
        self, audios: Any = None, sr: int | None = None, *, bpm: Any = None, target: Any = None
    ) -> None:
        if (audios is None) == (bpm is None):
            raise ValueError("pass exactly one of `audios` (with `sr`) or `bpm`")
        if audios is not None:
            if sr is None:
                raise ValueError("`sr` is required with `audios`")
            est = np.array([estimate_tempo(a, sr, **self.tempo_kwargs).bpm for a in as_clip_list(audios)])
        else:
            est = np.atleast_1d(np.asarray(bpm.detach().cpu() if hasattr(bpm, "detach") else bpm, np.float64))
        if target is None:
            if self.target_bpm is None:
                raise ValueError("no `target` given and the metric has no `target_bpm`")
            target = self.target_bpm
        tgt = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target, np.float64)
        tgt = np.broadcast_to(tgt, est.shape)
        fn = tempo_accuracy2 if self.octave_aware else tempo_accuracy1
        hits = np.asarray(fn(est, tgt, tol=self.tol))
        self.correct += float(hits.sum())
        self.total += float(est.size)

    def compute(self) -> torch.Tensor:
        if self.total <= 0:
            return _nan()
        return self.correct / self.total


class MeanAttribute(Metric):
    """Mean of one attribute of :data:`~steerlit.metrics.attributes.ATTRIBUTE_NAMES` over clips.

    ``update(audios, sr)`` computes the attribute per clip; ``update(values=...)`` takes
    precomputed values ``(B,)``. Non-finite values (e.g. ``bpm`` of a silent clip) are skipped
    and counted in the ``skipped`` state. ``compute()`` returns a float64 scalar tensor (``nan``
    if no finite value was seen).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, name: str, *, tempo_kwargs: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if name not in ATTRIBUTE_NAMES:
            raise KeyError(f"unknown attribute {name!r}; choose from {ATTRIBUTE_NAMES}")
        self.name = name
        self.tempo_kwargs = dict(tempo_kwargs or {})
        self.add_state("value_sum", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")

    def update(self, audios: Any = None, sr: int | None = None, *, values: Any = None) -> None:
        if (audios is None) == (values is None):
            raise ValueError("pass exactly one of `audios` (with `sr`) or `values`")
        if audios is not None:
            if sr is None:
                raise ValueError("`sr` is required with `audios`")
            vals = np.array(
                [
                    compute_attribute(a, sr, self.name, tempo_kwargs=self.tempo_kwargs)
                    for a in as_clip_list(audios)
                ],
                dtype=np.float64,
            )
        else:
            raw = values.detach().cpu() if hasattr(values, "detach") else values
            vals = np.atleast_1d(np.asarray(raw, dtype=np.float64))
        finite = np.isfinite(vals)
        self.value_sum += float(vals[finite].sum())
        self.count += float(finite.sum())
        self.skipped += float((~finite).sum())

    def compute(self) -> torch.Tensor:
        if self.count <= 0:
            return _nan()
        return self.value_sum / self.count


class DSPFrechetDistance(Metric):
    """Streaming :func:`~steerlit.metrics.quality.dsp_frechet` between a reference and a test set.

    ``update(audios, real=True)`` adds clips to the reference set, ``real=False`` to the test
    set. States are frame counts, feature sums ``(D,)`` and outer-product sums ``(D, D)``
    per set, so the result equals the one-shot function on the union of all updates (up to
    float rounding). ``compute()`` returns a float64 scalar tensor (``nan`` until both sets have
    at least two frames).

    Args:
        sr: sample rate of every clip.
        feature_kwargs: passed to :func:`~steerlit.metrics.quality.dsp_features`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, sr: int, *, feature_kwargs: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.sr = int(sr)
        self.feature_kwargs = dict(feature_kwargs or {})
        dim = int(self.feature_kwargs.get("n_bands", N_BANDS)) + int(
            self.feature_kwargs.get("n_mfcc", N_MFCC)
        )
        self.dim = dim
        for side in ("real", "fake"):
            self.add_state(f"{side}_n", default=torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
            self.add_state(f"{side}_sum", default=torch.zeros(dim, dtype=_F64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", default=torch.zeros(dim, dim, dtype=_F64), dist_reduce_fx="sum")

    def update(self, audios: Any, real: bool) -> None:
        feats = np.concatenate(
            [dsp_features(a, self.sr, **self.feature_kwargs) for a in as_clip_list(audios)]
        )
        f = torch.from_numpy(feats).to(device=self.real_sum.device, dtype=_F64)
        side = "real" if real else "fake"
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + f.shape[0])
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + f.sum(dim=0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + f.T @ f)

    def _stats(self, side: str) -> tuple[np.ndarray, np.ndarray] | None:
        n = float(getattr(self, f"{side}_n"))
        if n < 2:
            return None
        s = getattr(self, f"{side}_sum").detach().cpu().numpy()
        outer = getattr(self, f"{side}_outer").detach().cpu().numpy()
        mu = s / n
        cov = (outer - n * np.outer(mu, mu)) / (n - 1.0)
        return mu, (cov + cov.T) / 2.0

    def compute(self) -> torch.Tensor:
        real, fake = self._stats("real"), self._stats("fake")
        if real is None or fake is None:
            return _nan()
        return torch.tensor(frechet_distance(real[0], real[1], fake[0], fake[1]), dtype=_F64)
