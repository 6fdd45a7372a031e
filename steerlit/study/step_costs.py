"""Measured per-step costs of MusicGen decoding, and the rules that carry them to other shapes.

Every figure here is a measurement (see BENCHMARKS.md and ../shared/NOTES.md); the scaling rules are stated
next to the numbers they scale. Costs are keyed by **decoder rows**: the batch the decoder sees, which is twice
the number of prompts under classifier-free guidance.

GPU (one H100, musicgen-small shape, random weights, fp16, guidance 3, 250 steps, NOTES "Fast decoding"):

==============================  ==========  ==========  ==========
path                            1 prompt    8 prompts   64 prompts
==============================  ==========  ==========  ==========
HF generate, sdpa               65 steps/s  55          53
HF generate, eager attention    29          53          45
fast engine, CUDA graphs,       524         475         291
per-row steering in the graph
memory-bandwidth bound          ~4,500      ~3,600      ~1,400
==============================  ==========  ==========  ==========

Rule for other shapes on a GPU: the part of the measured step time above the bandwidth bound (kernel launches
and per-kernel overhead) scales with the number of decoder layers; the bound itself scales with the decoder's
parameter count (the weights read each step). For musicgen-large this gives 31 steps/s for HF sdpa at batch 1,
within the measured 29-33 (small: 62-67). Batches above 64 prompts are costed as 64-prompt chunks (no further
gain from batching is assumed). Between measured batches the step time is interpolated linearly in log(batch).

CPU (this 2-core machine; a musicgen-small-shaped random model in fp32; HF generate, guidance 3):
one step at 1 prompt took 0.184 s on a quiet machine with 2 threads (NOTES); on 2026-12-01, 1 thread at load
average ~14, the random public-shape checkpoint (``build_random_checkpoint("small")``) took 0.929 s per step at
1 prompt and 1.508 s at 4 prompts (differences of 4- and 12-step calls), an extraction pass over 16 prompts
7.86 s, EnCodec decoding of 1 s of audio 1.66 s and the clip metrics of a 10 s clip 1.22 s. The CPU model is
``weights read + rows x compute``: 0.146 s + 0.0191 s per decoder row for the small shape (the loaded figures
over their 5.05x contention factor), scaled by parameter count, plus 0.8 ms per layer and step of fixed overhead
(the tiny model's ~300 steps/s). The fast engine's loop without graphs took 0.64x the HF time on CPU
(BENCHMARKS.md: 9.4 s vs 14.6 s for 20 steps). Clip metrics run on one CPU core per process on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from steerlit.engines.select import EngineName
from steerlit.models.musicgen_shapes import CODEBOOK_SIZE, DECODER_SHAPES, NUM_CODEBOOKS, DecoderShape

DeviceKind = Literal["cpu", "cuda"]
DEVICE_KINDS: tuple[DeviceKind, ...] = get_args(DeviceKind)

REFERENCE = DECODER_SHAPES["small"]  # the shape every measurement was taken on
GPU_STEPS_PER_S: dict[str, dict[int, float]] = {  # H100, keyed by decoder rows (2 x prompts under CFG)
    "hf": {2: 65.0, 16: 55.0, 128: 53.0},  # attn_implementation sdpa (the musicgen model configs' choice)
    "hf_eager": {2: 29.0, 16: 53.0, 128: 45.0},
    "fast": {2: 524.0, 16: 475.0, 128: 291.0},
}
GPU_BANDWIDTH_BOUND_STEPS_PER_S = {2: 4500.0, 16: 3600.0, 128: 1400.0}
GPU_ENCODEC_S_PER_5S = {1: 0.013, 8: 0.019, 64: 0.075}  # EnCodec decode of 5 s clips, per batch (H100)
CPU_WEIGHTS_S = 0.146  # small shape, per step: reading the fp32 weights (quiet 2-core machine)
CPU_ROW_S = 0.0191  # small shape, per step and decoder row: the compute
CPU_LAYER_OVERHEAD_S = 0.0008  # per layer and step, any shape
CPU_FAST_FACTOR = 0.64  # fast engine loop (no graphs) / HF generate on CPU
CPU_CONTENTION = 5.05  # loaded measurement / quiet measurement of the same step (0.929 s / 0.184 s)
CPU_ENCODEC_S_PER_AUDIO_S = 1.661 / CPU_CONTENTION  # per row and second of audio (measured loaded, 1 s clip)
CPU_EXTRACT_FACTOR = 3.5  # an extraction batch (T5 + one decoder step, no CFG) / one decoder step, CPU
GPU_EXTRACT_FACTOR = 2.0  # the same on a GPU (launch-bound: T5's 12 layers ~ the decoder's kernel count)
METRICS_S_PER_AUDIO_S = 1.22 / 10 / CPU_CONTENTION  # tempo + centroid + loudness of a clip, one CPU core
MAX_MEASURED_PROMPTS = 64


def decoder_parameters(
    shape: DecoderShape, codebooks: int = NUM_CODEBOOKS, entries: int = CODEBOOK_SIZE
) -> int:
    """Parameters of a MusicGen decoder: codebook embeddings (entries + 1 for the pad id), per block self- and
    cross-attention (8 H^2), the FFN (2 H F) and three LayerNorms, the final LayerNorm and one head per
    codebook. Exactly what ``transformers`` builds (419,584,000 for musicgen-small)."""
    h, f = shape.hidden, shape.ffn
    block = 8 * h * h + 2 * h * f + 6 * h
    return codebooks * (entries + 1) * h + shape.layers * block + 2 * h + codebooks * h * entries


def check_device_kind(device: str) -> DeviceKind:
    if device not in DEVICE_KINDS:
        raise ValueError(f"Unknown device kind {device!r} for an estimate; use one of {DEVICE_KINDS}.")
    return device  # type: ignore[return-value]


def interpolate_log(table: dict[int, float], x: float) -> float:
    """Linear interpolation of ``table`` in log(x), clamped to its first and last keys."""
    keys = sorted(table)
    x = min(max(x, keys[0]), keys[-1])
    for lo, hi in zip(keys, keys[1:]):
        if x <= hi:
            w = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return table[lo] + w * (table[hi] - table[lo])
    return table[keys[-1]]


def gpu_step_seconds(shape: DecoderShape, engine: EngineName, rows: int) -> float:
    """Seconds of one decoding step for ``rows`` decoder rows (at most the measured 128) on an H100."""
    if engine not in GPU_STEPS_PER_S:
        raise ValueError(f"No GPU step cost for engine {engine!r}; measured: {sorted(GPU_STEPS_PER_S)}.")
    measured = 1.0 / interpolate_log(GPU_STEPS_PER_S[engine], rows)
    bound = 1.0 / interpolate_log(GPU_BANDWIDTH_BOUND_STEPS_PER_S, rows)
    layers = shape.layers / REFERENCE.layers
    params = decoder_parameters(shape) / decoder_parameters(REFERENCE)
    return (measured - bound) * layers + bound * params


def cpu_step_seconds(shape: DecoderShape, engine: EngineName, rows: int) -> float:
    """Seconds of one decoding step for ``rows`` decoder rows on the reference CPU (quiet, 2 threads)."""
    params = decoder_parameters(shape) / decoder_parameters(REFERENCE)
    seconds = (CPU_WEIGHTS_S + rows * CPU_ROW_S) * params + shape.layers * CPU_LAYER_OVERHEAD_S
    return seconds * (CPU_FAST_FACTOR if engine == "fast" else 1.0)


def step_seconds(shape: DecoderShape, engine: EngineName, device: str, rows: int) -> float:
    """One decoding step of ``rows`` decoder rows; above the measured 64 prompts (128 rows), chunks of 128."""
    if rows < 1:
        raise ValueError(f"A decoding step needs at least one row, got {rows}.")
    kind = check_device_kind(device)
    one = gpu_step_seconds if kind == "cuda" else cpu_step_seconds
    cap = 2 * MAX_MEASURED_PROMPTS
    full, rest = divmod(rows, cap)
    return full * one(shape, engine, cap) + (one(shape, engine, rest) if rest else 0.0)


def audio_decode_seconds(device: str, batch: int, seconds: float) -> float:
    """EnCodec decoding of ``batch`` clips of ``seconds`` (the 32 kHz codec, as every public MusicGen)."""
    if check_device_kind(device) == "cpu":
        return batch * seconds * CPU_ENCODEC_S_PER_AUDIO_S
    full, rest = divmod(batch, MAX_MEASURED_PROMPTS)
    per_5s = full * GPU_ENCODEC_S_PER_5S[64] + (interpolate_log(GPU_ENCODEC_S_PER_5S, rest) if rest else 0.0)
    return per_5s * seconds / 5.0


def extraction_batch_seconds(shape: DecoderShape, device: str, batch: int) -> float:
    """One text-only extraction pass over ``batch`` prompts: T5, then one decoder step (no guidance)."""
    factor = CPU_EXTRACT_FACTOR if check_device_kind(device) == "cpu" else GPU_EXTRACT_FACTOR
    return factor * step_seconds(shape, "hf", device, batch)


@dataclass(frozen=True)
class FixedCosts:
    """Per-process costs that do not depend on the grid (rough figures, stated as such in the table)."""

    startup_s: float = 12.0  # interpreter, torch/transformers/lightning imports, CUDA context
    load_bytes_per_s: float = 0.5e9  # reading + materialising fp32 weights (CPU: 41 s loaded / 5 for small)
    gpu_load_bytes_per_s: float = 2.0e9
    fit_s_per_trained_method: float = 5.0  # a Lightning probe fit over every site of one concept
    fit_s_per_concept: float = 2.0  # difference of means, PCA, random, files


def load_seconds(shape: DecoderShape, device: str, costs: FixedCosts | None = None) -> float:
    """Loading an fp32 checkpoint (decoder + T5-base + EnCodec, ~167 M parameters besides the decoder)."""
    costs = costs or FixedCosts()
    weights = 4 * (decoder_parameters(shape) + 167_000_000)
    rate = costs.load_bytes_per_s if check_device_kind(device) == "cpu" else costs.gpu_load_bytes_per_s
    return weights / rate
