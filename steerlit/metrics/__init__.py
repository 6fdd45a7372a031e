"""Audio attribute metrics for measuring what steering changed.

Pure functions take mono float numpy audio ``(samples,)`` and a sample rate; the torchmetrics
wrappers aggregate them across batches and DDP ranks. librosa / scipy / transformers are
imported lazily inside the functions that need them.
"""

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
from steerlit.metrics.tempo import TempoEstimate, estimate_tempo, tempo_accuracy1, tempo_accuracy2
from steerlit.metrics.torchmetrics_wrappers import DSPFrechetDistance, MeanAttribute, TempoAccuracy

__all__ = [
    "ATTRIBUTE_NAMES",
    "DSP_FEATURE_DIM",
    "ClapScorer",
    "DSPFrechetDistance",
    "MeanAttribute",
    "TempoAccuracy",
    "TempoEstimate",
    "clipping_ratio",
    "compute_attribute",
    "compute_attributes",
    "dsp_features",
    "dsp_frechet",
    "estimate_tempo",
    "feature_stats",
    "frame_rms_dbfs",
    "frechet_distance",
    "integrated_loudness",
    "k_weight",
    "peak_dbfs",
    "pooled_features",
    "rms_dbfs",
    "silence_ratio",
    "spectral_centroid",
    "spectral_rolloff",
    "tempo_accuracy1",
    "tempo_accuracy2",
]
