"""The typed settings of one study: one frozen object per concern, composed by :func:`steerlit.config.compose`.

Each concern's settings live in the package that owns it (models, data, directions, engines, metrics); the
study adds the grid axes, the logger and the trainer. Every list of choices is a ``Literal`` declared once,
in the module that owns it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf

from steerlit.data.settings import ProbeSettings
from steerlit.directions.fit import Method
from steerlit.directions.settings import ExtractSettings, FitSettings
from steerlit.engines.settings import GenerationSettings
from steerlit.intervene.injection import Strategy
from steerlit.intervene.operators import Operator
from steerlit.intervene.steer import CfgHalf
from steerlit.metrics.settings import MetricsSettings
from steerlit.models.settings import ModelSettings
from steerlit.runtime import TrainerSettings
from steerlit.study.patch_settings import PatchSettings

LoggerKind = Literal["wandb", "none"]
LoggerMode = Literal["auto", "online", "offline", "disabled"]


@dataclass(frozen=True)
class SteerSettings(GenerationSettings):
    """The steering grid (layers x alphas x methods x strategies over the evaluation prompts) and, inherited,
    the :class:`GenerationSettings` every row is generated with (``.generation()`` gives them alone)."""

    layers: tuple[int, ...] | None = None  # source layers; None: the middle layer
    alphas: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    methods: tuple[Method, ...] = ("diffmean", "regression")
    # Control directions steered beside ``methods`` at every α, layer and strategy: ``random`` is a Gaussian direction
    # of the diff-mean norm (fitted by default), so each method's effect can be read against it (effect_vs_random).
    # ``[]`` turns the control off.
    controls: tuple[Method, ...] = ("random",)
    strategies: tuple[Strategy, ...] = ("one_to_all",)
    operator: Operator = "add"
    schedule: Any = "constant"  # a ScheduleKind name or {kind: exp_decay, rate: .., floor: ..}
    half: CfgHalf = "both"
    n_prompts: int | None = 8  # neutral evaluation prompts used (None: all)
    every_n_epochs: int = 0  # also steer at every n-th probe validation epoch (0: only at the end of fitting)
    # Steer with directions whose file names another model (model_id or weights fingerprint): off, so that a
    # direction file of another model is refused (steerlit.directions.io.check_same_model).
    allow_other_model: bool = False


def steered_methods(steer: SteerSettings, methods: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``methods`` (default ``steer.methods``) followed by the ``steer.controls`` not already among them."""
    chosen = tuple(methods) if methods is not None else tuple(steer.methods)
    return chosen + tuple(c for c in steer.controls if c not in chosen)


@dataclass(frozen=True)
class LoggerSettings:
    """What goes to W&B. ``project``, ``group``, ``job_type``, ``tags`` and ``notes``: a value set here wins over
    the standard ``WANDB_PROJECT``, ``WANDB_RUN_GROUP``, ``WANDB_JOB_TYPE``, ``WANDB_TAGS`` (comma-separated) and
    ``WANDB_NOTES`` variables, which win over steerlit's defaults (project ``steerlit``, group = the experiment,
    job type = the command, e.g. ``study``)."""

    kind: LoggerKind = "wandb"
    mode: LoggerMode = "auto"  # auto (online with a key, else offline) | online | offline | disabled
    project: str | None = None
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: tuple[str, ...] = ()
    notes: str | None = None
    log_audio: bool = True
    audio_prompts_per_group: int = 2  # prompts (each at every alpha and seed) with audio per steering group


@dataclass(frozen=True)
class StudySettings:
    output_dir: str = "runs"
    run_name: str | None = None  # default: <experiment or 'run'>-<timestamp>
    experiment: str | None = None
    seed: int = 0
    model: ModelSettings = field(default_factory=ModelSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    steer: SteerSettings = field(default_factory=SteerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    patch: PatchSettings = field(default_factory=PatchSettings)  # `steerlit patch` (study/patching.py)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


def as_dict(settings: StudySettings) -> dict:
    """The settings as plain dicts and lists (e.g. a W&B run's config)."""
    return OmegaConf.to_container(OmegaConf.create(to_yaml(settings)))


def check_layers(settings: StudySettings, num_layers: int) -> None:
    """Layer checks that need the model's depth (run right after the config is read, from model config.json)."""
    for key, layers in (("steer.layers", settings.steer.layers), ("extract.layers", settings.extract.layers)):
        bad = [int(x) for x in (layers or []) if int(x) >= num_layers]
        if bad:
            raise ConfigError(
                f"{key} has layers {bad} out of range: the model has {num_layers} layers (0..{num_layers - 1})."
            )


def check_clip_length(key: str, seconds: float, frame_rate: float) -> None:
    """A clip of ``seconds`` has at least one codec frame (what the model's codebook delay pattern decodes
    into audio; shorter clips give no audio at all), else :class:`ConfigError` naming ``key``."""
    if round(seconds * frame_rate) < 1:
        raise ConfigError(
            f"{key}={seconds} is shorter than one frame of this model ({1 / frame_rate:.3g} s at {frame_rate:g} "
            f"frames per second), so no audio is decoded after the codebook delay; use {key} >= "
            f"{1 / frame_rate:.3g}."
        )


def to_yaml(settings: StudySettings) -> str:
    """The resolved settings as YAML (what ``config.yaml`` holds and ``--config`` reads back)."""
    return OmegaConf.to_yaml(OmegaConf.structured(settings))


def load_run_config(path: Path) -> Any:
    """A run folder's ``config.yaml`` (an OmegaConf node), or :class:`ConfigError` naming the file and the fix
    when it is truncated or damaged: unreadable YAML, no final newline, or no last section (``to_yaml`` always
    writes every section and ends with a newline)."""
    last = dataclasses.fields(StudySettings)[-1].name
    problem = None
    try:
        text = Path(path).read_text()
        node = OmegaConf.create(text)
    except Exception as err:  # yaml and decoding errors come in several types
        problem, text, node = str(err).splitlines()[0], "", None
    if problem is None and (not text.endswith("\n") or not OmegaConf.is_dict(node) or last not in node):
        problem = f"it ends before its last section {last!r}" if text.endswith("\n") else "no final newline"
    if problem is not None:
        raise ConfigError(
            f"{path} is truncated or damaged ({problem}); rewrite it by rerunning `steerlit run "
            f"run_name={Path(path).parent.name} output_dir={Path(path).parent.parent}` with the run's original "
            "overrides (finished work is reused), or restore the file from a copy."
        )
    return node
