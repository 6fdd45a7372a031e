"""Audio attribute metrics for measuring what steering changed.

Pure functions take one clip and a sample rate: mono float numpy audio ``(samples,)``, or integer PCM,
stereo in either layout or torch tensors (the rules: :mod:`steerlit.metrics.audio_input`). The torchmetrics
wrappers aggregate them across batches and DDP ranks; :class:`~steerlit.metrics.pool.ClipMeasurer` measures
clips in worker processes, so that a native crash in a metric cannot take a run down.

Import order matters: importing this package (any of its modules) points numba's on-disk cache at a folder
steerlit owns when ``NUMBA_CACHE_DIR`` is unset, and librosa's numba functions are compiled under a file lock
(:mod:`steerlit.metrics.numba_cache`). Import it before librosa, and call :func:`warm_metrics` once before
starting DDP ranks or metric workers.

librosa / scipy / transformers are imported lazily inside the functions that need them, and the torchmetrics
wrappers (torch) only when first used, so that worker processes start without torch.
"""

# numba_cache first: it configures NUMBA_CACHE_DIR on import (every metric module imports it too).
from steerlit.metrics.numba_cache import configure_numba_cache, numba_cache_dir, warm_metrics  # noqa: I001
from steerlit.metrics.attributes import ATTRIBUTE_NAMES, compute_attribute, compute_attributes
from steerlit.metrics.brightness import spectral_centroid, spectral_rolloff
from steerlit.metrics.clap import ClapScorer
from steerlit.metrics.loudness import (
    clipping_ratio,
    frame_rms_dbfs,
    integrated_loudness,
    k_weight,
    peak_dbfs,
    rms_dbfs,
    silence_ratio,
)
from steerlit.metrics.quality import (
    DSP_FEATURE_DIM,
    dsp_features,
    dsp_frechet,
    feature_stats,
    frechet_distance,
    pooled_features,
)
from steerlit.metrics.pool import ClipMeasurer, MeasurerSpec
from steerlit.metrics.tempo import TempoEstimate, estimate_tempo, tempo_accuracy1, tempo_accuracy2

# deferred: torch (the torchmetrics wrappers load on first use; metric workers need no torch)
_TORCH_EXPORTS = ("DSPFrechetDistance", "MeanAttribute", "TempoAccuracy")


def __getattr__(name: str):
    if name in _TORCH_EXPORTS:
        from steerlit.metrics import torchmetrics_wrappers  # deferred: torch

        return getattr(torchmetrics_wrappers, name)
    raise AttributeError(f"module 'steerlit.metrics' has no attribute {name!r}")


__all__ = [
    "ATTRIBUTE_NAMES",
    "DSP_FEATURE_DIM",
    "ClapScorer",
    "ClipMeasurer",
    "DSPFrechetDistance",
    "MeanAttribute",
    "MeasurerSpec",
    "TempoAccuracy",
    "TempoEstimate",
    "clipping_ratio",
    "compute_attribute",
    "compute_attributes",
    "configure_numba_cache",
    "dsp_features",
    "dsp_frechet",
    "estimate_tempo",
    "feature_stats",
    "frame_rms_dbfs",
    "frechet_distance",
    "integrated_loudness",
    "k_weight",
    "numba_cache_dir",
    "peak_dbfs",
    "pooled_features",
    "rms_dbfs",
    "silence_ratio",
    "spectral_centroid",
    "spectral_rolloff",
    "tempo_accuracy1",
    "tempo_accuracy2",
    "warm_metrics",
]
