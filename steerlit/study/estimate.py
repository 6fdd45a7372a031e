"""Dry-run estimates: the rows, decoding steps and wall time of a study, before any model loads.

The grid has, for every (evaluation prompt, seed), one unsteered reference row plus one row per (concept,
method, source layer, strategy, non-zero α), exactly as :func:`steerlit.engines.grid.build_grid` makes it. A
row decodes ``seconds x frame rate + codebooks - 1`` steps; guidance doubles the decoder batch. Extraction is
one text-only pass per batch of probe prompts (or a short generation with ``extract.source=generate``). Rows and
prompts are split evenly over the devices of a DDP run. Per-step costs and their scaling rules are in
:mod:`steerlit.study.step_costs` (H100 and CPU measurements).

    estimate = estimate_for_study(settings)        # a composed StudySettings; reads probe YAMLs, no weights
    print(format_estimate(estimate))
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from steerlit.data.probe_set import load_eval_prompts, load_probe_set
from steerlit.engines.settings import GenerationSettings
from steerlit.models.loading import ModelLoadError, resolve_model_path
from steerlit.models.musicgen_shapes import (
    DECODER_SHAPES,
    FRAME_RATE,
    NUM_CODEBOOKS,
    DecoderShape,
    decoder_shape_from_config,
    size_of,
)
from steerlit.study.settings import StudySettings, steered_methods
from steerlit.study.step_costs import METRICS_S_PER_AUDIO_S as METRICS_COST
from steerlit.study.step_costs import (
    FixedCosts,
    audio_decode_seconds,
    check_device_kind,
    extraction_batch_seconds,
    load_seconds,
    step_seconds,
)

STAGES = ("startup", "load", "extraction", "fit", "warm-up", "grid decode", "audio decode", "metrics")
AUTO_BATCH = {"cpu": 16, "cuda": 64}  # batch_size=None: the CPU default, and the largest measured GPU batch
TRAINED_METHODS = ("logistic", "regression")
FAST_WARMUP_S = 2.0  # the fast engine's first call per batch shape: one eager step per bucket + graph capture


class EstimateError(ValueError):
    """An estimate that cannot be made: unknown model shape, bad grid or device."""


@dataclass(frozen=True)
class GridShape:
    """The sizes of the grid axes (distinct values of each)."""

    prompts: int
    seeds: int = 1
    concepts: int = 1
    methods: int = 1
    layers: int = 1
    strategies: int = 1
    steered_alphas: int = 1  # non-zero α values; α = 0 is the reference row
    reference: bool = True

    @property
    def steered_rows_per_prompt_seed(self) -> int:
        return self.concepts * self.methods * self.layers * self.strategies * self.steered_alphas

    @property
    def rows(self) -> int:
        return self.prompts * self.seeds * (self.steered_rows_per_prompt_seed + int(self.reference))


@dataclass(frozen=True)
class ExtractionShape:
    """Extraction work: ``prompts`` over every probe set and pole, in batches of ``batch_size``; ``gen_steps=0``
    is the text-only prefill (``extract.source=prompt``), else a generation of that many steps with guidance."""

    prompts: int
    batch_size: int = 16
    gen_steps: int = 0
    guidance_scale: float = 3.0


@dataclass(frozen=True)
class Hardware:
    """Where it runs: ``device`` cpu | cuda (H100-class figures), ``devices`` DDP processes."""

    device: str = "cpu"
    devices: int = 1

    def __post_init__(self):
        check_device_kind(self.device)
        if int(self.devices) < 1:
            raise EstimateError(f"devices must be >= 1 for an estimate, got {self.devices}.")


@dataclass(frozen=True)
class StudyEstimate:
    """Rows, decoding steps per row, batches per device and the estimated seconds of each stage (per device:
    devices run in parallel)."""

    model: str
    shape: DecoderShape
    engine: str
    hardware: Hardware
    batch_size: int
    grid: GridShape
    decode_steps: int
    batches_per_device: int
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.grid.rows

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())


def decode_steps(seconds: float, frame_rate: float = FRAME_RATE, codebooks: int = NUM_CODEBOOKS) -> int:
    """Decoding steps of one clip (as ``MusicGenAdapter.seconds_to_steps``: the delay pattern adds K - 1)."""
    return int(round(seconds * frame_rate)) + codebooks - 1


def batch_sizes(items: int, batch_size: int) -> list[int]:
    """The batch sizes ``items`` are cut into (full batches, then the rest)."""
    full, rest = divmod(items, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def grid_seconds(shape, engine, hardware, batches, steps, guidance_scale, seconds) -> dict[str, float]:
    """Decoding (steps + 2 step-equivalents per call: the prefill HF throws away and the text encoding), the fast
    engine's CUDA-graph warm-up (once per batch shape), EnCodec decoding and metrics of one device's batches."""
    rows_factor = 2 if guidance_scale > 1 else 1
    decode = sum((steps + 2) * step_seconds(shape, engine, hardware.device, b * rows_factor) for b in batches)
    warmup = FAST_WARMUP_S * len(set(batches)) if engine == "fast" and hardware.device == "cuda" else 0.0
    audio = sum(audio_decode_seconds(hardware.device, b, seconds) for b in batches)
    metrics = sum(batches) * seconds * METRICS_COST
    return {"warm-up": warmup, "grid decode": decode, "audio decode": audio, "metrics": metrics}


def extraction_seconds(shape: DecoderShape, extraction: ExtractionShape, hardware: Hardware) -> float:
    prompts = math.ceil(extraction.prompts / hardware.devices)
    total = 0.0
    for b in batch_sizes(prompts, extraction.batch_size):
        if extraction.gen_steps:
            rows = b * (2 if extraction.guidance_scale > 1 else 1)
            total += (extraction.gen_steps + 2) * step_seconds(shape, "hf", hardware.device, rows)
        else:
            total += extraction_batch_seconds(shape, hardware.device, b)
    return total


def estimate_study(
    shape: DecoderShape,
    grid: GridShape,
    generation: GenerationSettings,
    extraction: ExtractionShape,
    hardware: Hardware,
    *,
    model: str = "",
    attn_implementation: str | None = None,
    trained_methods: int = len(TRAINED_METHODS),
    costs: FixedCosts | None = None,
) -> StudyEstimate:
    """Estimate every stage of a study of ``grid`` rows generated with ``generation`` (seconds, guidance, batch
    size, engine) after ``extraction``, on ``hardware``. ``attn_implementation="eager"`` uses HF's eager figures."""
    costs = costs or FixedCosts()
    if grid.rows < 1:
        raise EstimateError(f"The grid has no rows ({grid}); give at least one prompt and one seed.")
    batch = generation.batch_size or AUTO_BATCH[hardware.device]
    engine = "hf_eager" if generation.engine == "hf" and attn_implementation == "eager" else generation.engine
    steps = decode_steps(generation.seconds)
    batches = batch_sizes(math.ceil(grid.rows / hardware.devices), batch)
    stages = {
        "startup": costs.startup_s,
        "load": load_seconds(shape, hardware.device, costs),
        "extraction": extraction_seconds(shape, extraction, hardware) if extraction.prompts else 0.0,
        "fit": grid.concepts * (trained_methods * costs.fit_s_per_trained_method + costs.fit_s_per_concept),
    }
    stages.update(
        grid_seconds(shape, engine, hardware, batches, steps, generation.guidance_scale, generation.seconds)
    )
    return StudyEstimate(
        model=model,
        shape=shape,
        engine=generation.engine,
        hardware=hardware,
        batch_size=batch,
        grid=grid,
        decode_steps=steps,
        batches_per_device=len(batches),
        stage_seconds={k: stages[k] for k in STAGES},
    )


def decoder_shape_for(name: str, hf_cache_dir: str | None = None) -> DecoderShape:
    """The decoder shape of a model, from its name alone: a public size (``facebook/musicgen-small``,
    ``musicgen_medium``, ...), ``tiny``, a shipped model or folder (its ``config.json``), or a hub id whose
    ``config.json`` is in the local Hugging Face cache. Nothing is loaded."""
    size = size_of(name)
    if size is not None:
        return DECODER_SHAPES[size]
    if name == "tiny":
        from steerlit.models.tiny import (
            tiny_musicgen_config,
        )  # deferred: transformers (tiny.py imports it at top)

        return decoder_shape_from_config(tiny_musicgen_config())
    try:
        path, model_id = resolve_model_path(name)
    except ModelLoadError as err:
        raise EstimateError(f"No decoder shape for {name!r}: {err}") from err
    config_file = path / "config.json" if path is not None else hub_config_file(model_id, hf_cache_dir)
    if config_file is None or not Path(config_file).is_file():
        raise EstimateError(
            f"No decoder shape for {name!r}: it is not a public MusicGen size (small, medium, large), and no "
            f"config.json was found for it (folder or local Hugging Face cache {hf_cache_dir or 'default'}). "
            "Pass a model folder, a public size, or set model.hf_cache_dir to the cache that holds it."
        )
    data = json.loads(Path(config_file).read_text())
    if "decoder" not in data:
        raise EstimateError(f"{config_file} is not a MusicGen config (no 'decoder' section).")
    return decoder_shape_from_config(data)


def hub_config_file(repo_id: str, hf_cache_dir: str | None) -> str | None:
    """``config.json`` of ``repo_id`` in the local hub cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache  # deferred: only for hub ids

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf_cache_dir)
    return found if isinstance(found, str) else None


def hardware_for(settings: StudySettings) -> Hardware:
    """cuda when the trainer or the model asks for a GPU; DDP processes = ``trainer.devices`` under a ddp
    strategy (``-1``/``auto``: every visible GPU), else 1."""
    trainer = settings.trainer
    wants_gpu = trainer.accelerator in ("gpu", "cuda") or str(settings.model.device).startswith("cuda")
    if trainer.accelerator == "auto" and not wants_gpu:
        import torch  # deferred: only for accelerator=auto

        wants_gpu = torch.cuda.is_available()
    devices = trainer.devices
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif devices in (-1, "auto", "-1"):
        import torch  # deferred: only to count visible GPUs

        count = max(1, torch.cuda.device_count()) if wants_gpu else 1
    else:
        count = int(devices)
    ddp = str(trainer.strategy).startswith("ddp")
    return Hardware(device="cuda" if wants_gpu else "cpu", devices=count if ddp else 1)


def grid_shape_for(settings: StudySettings, eval_prompts: int) -> GridShape:
    """The grid axes of ``settings.steer`` over ``eval_prompts`` available evaluation prompts."""
    steer = settings.steer
    prompts = min(eval_prompts, steer.n_prompts) if steer.n_prompts else eval_prompts
    return GridShape(
        prompts=prompts,
        seeds=len(set(steer.seeds)),
        concepts=len(set(settings.probe.concepts)),
        # the steered methods and controls that have directions (the grid skips the others, as GridPlan does)
        methods=len([m for m in steered_methods(steer) if m in settings.fit.methods]),
        layers=len(set(steer.layers)) if steer.layers else 1,
        strategies=len(set(steer.strategies)),
        steered_alphas=len({float(a) for a in steer.alphas if float(a) != 0.0}),
    )


def probe_prompt_count(settings: StudySettings) -> int:
    """Prompts extraction runs over: both poles of every concept's probe set (``probe.max_per_pole`` applied)."""
    total = 0
    for concept in settings.probe.concepts:
        probe_set = load_probe_set(concept)
        limit = settings.probe.max_per_pole
        for prompts in (probe_set.positive_prompts, probe_set.negative_prompts):
            total += min(len(prompts), limit) if limit else len(prompts)
    return total


def estimate_for_study(settings: StudySettings) -> StudyEstimate:
    """The estimate of a composed study (it reads the probe and evaluation prompt files; no weights)."""
    extract = settings.extract
    extraction = ExtractionShape(
        prompts=probe_prompt_count(settings),
        batch_size=extract.batch_size,
        gen_steps=extract.gen_steps if extract.source == "generate" else 0,
    )
    return estimate_study(
        decoder_shape_for(settings.model.name, settings.model.hf_cache_dir),
        grid_shape_for(settings, len(load_eval_prompts(settings.probe.eval_set))),
        settings.steer.generation(),
        extraction,
        hardware_for(settings),
        model=settings.model.name,
        attn_implementation=settings.model.attn_implementation,
        trained_methods=len([m for m in settings.fit.methods if m in TRAINED_METHODS]),
    )


def clock(seconds: float) -> str:
    """``1h02m03s`` / ``2m03s`` / ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_estimate(estimate: StudyEstimate) -> str:
    """A small table: what the grid is, then the seconds of every stage and the total."""
    g, s, hw = estimate.grid, estimate.shape, estimate.hardware
    where = f"{hw.devices} x {hw.device}" + (
        " (H100-class figures)" if hw.device == "cuda" else " (2-core figures)"
    )
    lines = [
        f"dry run: {estimate.model or 'model'} ({s.layers} layers x {s.hidden}), engine {estimate.engine}, "
        f"{where}, batch {estimate.batch_size}",
        f"  grid rows      {g.rows:>10,}  = {g.prompts} prompts x {g.seeds} seeds x (1 reference + {g.concepts} "
        f"concepts x {g.methods} methods x {g.layers} layers x {g.strategies} strategies x {g.steered_alphas} α)",
        f"  decode steps   {estimate.decode_steps:>10,}  per row; {g.rows * estimate.decode_steps:,} row-steps, "
        f"{estimate.batches_per_device:,} batches per device",
    ]
    lines += [f"  {name:<14} {clock(sec):>10}" for name, sec in estimate.stage_seconds.items()]
    lines.append(
        f"  {'total':<14} {clock(estimate.total_seconds):>10}  (estimate; measured figures and rules: "
        "steerlit/study/step_costs.py)"
    )
    return "\n".join(lines)


def format_estimates(estimates: list[StudyEstimate]) -> str:
    """A markdown table of several estimates (one line each: model, engine, devices, stages, total)."""
    head = "| model | engine | devices | rows | steps/row | " + " | ".join(STAGES) + " | total |"
    lines = [head, "|" + "---|" * (len(STAGES) + 6)]
    for e in estimates:
        cells = [clock(e.stage_seconds[k]) for k in STAGES]
        lines.append(
            f"| {e.model} | {e.engine} | {e.hardware.devices} x {e.hardware.device} | {e.rows:,} | "
            f"{e.decode_steps} | " + " | ".join(cells) + f" | **{clock(e.total_seconds)}** |"
        )
    return "\n".join(lines)
