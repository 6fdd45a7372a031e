"""Typed configuration: OmegaConf YAML tree in ``configs/`` checked against dataclass schemas.

``configs/default.yaml`` names one file per concern (``model``, ``probe``, ``extract``, ``fit``,
``steer``, ``metrics``, ``logger``, ``trainer``); an ``experiment`` file is merged on top, then
command-line dotlist overrides (``steer.alphas=[-2,0,2] steer.layers=[6,12]``). Unknown keys and
wrong types fail with one :class:`ConfigError` before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ("model", "probe", "extract", "fit", "steer", "metrics", "logger", "trainer")
# Short top-level aliases accepted on the command line.
ALIASES = {
    "layers": "steer.layers",
    "alphas": "steer.alphas",
    "methods": "steer.methods",
    "concepts": "probe.concepts",
    "seeds": "steer.seeds",
    "strategies": "steer.strategies",
}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


@dataclass
class ModelConfig:
    name: str = "testbed"  # shipped short name (testbed, tiny), local folder or hub id
    device: str = "cpu"
    dtype: str | None = None  # float32 | float16 | bfloat16
    allow_download: bool = False
    attn_implementation: str | None = None  # eager | sdpa
    hf_cache_dir: str | None = None  # Hugging Face hub cache for hub ids (default: HF_HUB_CACHE)


@dataclass
class ProbeConfig:
    concepts: list[str] = field(default_factory=lambda: ["tempo", "timbre"])  # probe-set names or paths
    eval_set: str = "neutral"
    form: str = "poles"  # poles | pairs
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    max_per_pole: int | None = None  # use only the first N prompts per pole (quick runs)
    seed: int = 0


@dataclass
class ExtractConfig:
    site_kind: str = "resid_post"
    layers: list[int] | None = None  # None: every layer
    source: str = "prompt"  # prompt (text-only prefill step) | generate (short generation)
    position: str = "first"  # first | mean | last
    gen_steps: int = 16
    batch_size: int = 16
    dtype: str = "float32"  # storage dtype of the cache


@dataclass
class ProbeTrainConfig:
    max_epochs: int = 30
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 64
    standardize: bool = True
    scale: str = "diffmean"  # unit | diffmean


@dataclass
class FitConfig:
    methods: list[str] = field(
        default_factory=lambda: ["diffmean", "logistic", "regression", "pca", "random"]
    )
    probe: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)


@dataclass
class SteerConfig:
    layers: list[int] | None = None  # source layers; None: the middle layer
    alphas: list[float] = field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0])
    methods: list[str] = field(default_factory=lambda: ["diffmean", "regression"])
    strategies: list[str] = field(default_factory=lambda: ["one_to_all"])
    operator: str = "add"  # add | norm_add | ablate
    schedule: Any = "constant"  # name or {kind: exp_decay, rate: .., floor: ..}
    half: str = "both"  # both | cond | uncond
    seeds: list[int] = field(default_factory=lambda: [0])
    n_prompts: int | None = 8  # neutral evaluation prompts used (None: all)
    seconds: float = 2.0
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    batch_size: int | None = 16  # None: chosen from free memory
    engine: str = "hf"  # hf | fast
    every_n_epochs: int = 0  # also steer at every n-th probe validation epoch (0: only at the end of fitting)


@dataclass
class TempoMetricConfig:
    start_bpm: float = 120.0
    std_bpm: float = 1.0  # prior width in octaves (librosa default)
    min_bpm: float = 40.0
    max_bpm: float = 240.0


@dataclass
class MetricsConfig:
    tempo: TempoMetricConfig = field(default_factory=TempoMetricConfig)
    attributes: dict[str, str] = field(default_factory=dict)  # concept -> attribute (default by name)
    clap_path: str | None = None  # local CLAP folder for CLAP score and embedding FAD
    quality: bool = True  # DSP-feature Fréchet distance to the α=0 references


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | none
    mode: str = "auto"  # auto (online with a key, else offline) | online | offline | disabled
    project: str = "steerlit"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    log_audio: bool = True
    max_audio: int = 64


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"  # auto | ddp (CPU: gloo processes)
    enable_progress_bar: bool = True


@dataclass
class RunConfig:
    output_dir: str = "runs"
    run_name: str | None = None  # default: <experiment or 'run'>-<timestamp>
    experiment: str | None = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


CHOICES = {
    "probe.form": ("poles", "pairs"),
    "extract.source": ("prompt", "generate"),
    "extract.position": ("first", "mean", "last"),
    "fit.probe.scale": ("unit", "diffmean"),
    "steer.operator": ("add", "norm_add", "ablate"),
    "steer.half": ("both", "cond", "uncond"),
    "steer.engine": ("hf", "fast"),
    "logger.kind": ("wandb", "none"),
    "logger.mode": ("auto", "online", "offline", "disabled"),
}
METHODS = ("diffmean", "logistic", "regression", "pca", "random")


def _read_yaml(path: Path, what: str) -> DictConfig:
    if not path.exists():
        options = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.exists() else []
        raise ConfigError(f"{what} {path.stem!r} not found ({path}); available: {options}.")
    try:
        return OmegaConf.load(path)
    except Exception as err:  # yaml errors come in several types
        raise ConfigError(f"Could not parse {path}: {err}") from err


def _expand_aliases(overrides: list[str], configs_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Split overrides into dotlist items and group choices (``logger=none`` picks configs/logger/none.yaml).

    ``model=X`` is a group choice when configs/model/X.yaml exists, else a model name, folder or hub id.
    """
    out, choices = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} is not key=value (e.g. steer.alphas=[-2,0,2]).")
        key, value = key.strip(), value.strip()
        if key in GROUPS:
            if (configs_dir / key / f"{value}.yaml").exists():
                choices[key] = value
                continue
            if key != "model":
                options = sorted(p.stem for p in (configs_dir / key).glob("*.yaml"))
                raise ConfigError(
                    f"No {key} config named {value!r}; choose one of {options} (files in configs/{key}/)."
                )
            key = "model.name"
        out.append(f"{ALIASES.get(key, key)}={value}")
    return out, choices


def compose(
    overrides: list[str] | None = None,
    *,
    config_path: str | Path | None = None,
    configs_dir: Path = CONFIGS_DIR,
) -> DictConfig:
    """Build the run config: schema ← group files ← experiment ← user file ← dotlist overrides."""
    overrides, group_choices = _expand_aliases(list(overrides or []), configs_dir)
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    overrides = [o for o in overrides if not o.startswith("experiment=")]
    schema = OmegaConf.structured(RunConfig)
    layers: list = [schema]
    default = (
        _read_yaml(configs_dir / "default.yaml", "Config")
        if (configs_dir / "default.yaml").exists()
        else None
    )
    choices = dict(default.get("defaults", {})) if default is not None else {}
    if experiment:
        exp = _read_yaml(configs_dir / "experiment" / f"{experiment}.yaml", "Experiment")
        choices.update(dict(exp.get("defaults", {})))
    choices.update(group_choices)
    for group in GROUPS:
        if group in choices:
            layers.append(
                OmegaConf.create({group: _read_yaml(configs_dir / group / f"{choices[group]}.yaml", group)})
            )
    if default is not None:
        layers.append(OmegaConf.masked_copy(default, [k for k in default if k != "defaults"]))
    if experiment:
        layers.append(OmegaConf.masked_copy(exp, [k for k in exp if k != "defaults"]))
        layers.append(OmegaConf.create({"experiment": experiment}))
    if config_path is not None:
        layers.append(_read_yaml(Path(config_path), "Config file"))
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    validate(cfg)
    return cfg


def _explain(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if "Key" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(RunConfig)
        valid = sorted(OmegaConf.select(node, parent).keys()) if parent else sorted(node.keys())
        return f"Unknown config key {key!r}; valid keys{' under ' + parent if parent else ''}: {valid}."
    return f"Bad value for config key {key!r}: {msg}"


def validate(cfg: DictConfig) -> None:
    """Checks that need no model: choices, non-empty grids, probe-set files present."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {list(choices)}.")
    if not cfg.steer.alphas:
        raise ConfigError("steer.alphas is empty: give at least one α, e.g. steer.alphas=[-2,0,2].")
    if not cfg.steer.seeds:
        raise ConfigError("steer.seeds is empty: give at least one seed, e.g. steer.seeds=[0].")
    if not cfg.probe.concepts:
        raise ConfigError("probe.concepts is empty: name at least one probe set (e.g. tempo).")
    for group, values in (("fit.methods", cfg.fit.methods), ("steer.methods", cfg.steer.methods)):
        bad = [m for m in values if m not in METHODS]
        if bad:
            raise ConfigError(f"{group} has unknown methods {bad}; use some of {list(METHODS)}.")
    missing = [m for m in cfg.steer.methods if m not in cfg.fit.methods]
    if missing:
        raise ConfigError(f"steer.methods {missing} are not fitted; add them to fit.methods.")
    bad = [s for s in cfg.steer.strategies if s not in ("one_to_one", "one_to_all")]
    if bad or not cfg.steer.strategies:
        raise ConfigError(
            f"steer.strategies {list(cfg.steer.strategies)} invalid; use one_to_one and/or one_to_all."
        )
    if cfg.steer.seconds <= 0:
        raise ConfigError(f"steer.seconds must be > 0, got {cfg.steer.seconds}.")
    for layers_key in ("steer.layers", "extract.layers"):
        layers = OmegaConf.select(cfg, layers_key)
        if layers is not None and any(int(x) < 0 for x in layers):
            raise ConfigError(f"{layers_key} has a negative layer: {list(layers)}.")
    from steerlit.data.probe_set import resolve_probe_path

    for name in [*cfg.probe.concepts, cfg.probe.eval_set]:
        try:
            path = resolve_probe_path(name)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not Path(path).exists():
            raise ConfigError(f"Probe set {name!r} not found at {path}.")


def check_layers(cfg: DictConfig, num_layers: int) -> None:
    """Layer checks that need the model's depth (run right after the config is read, from model config.json)."""
    for key in ("steer.layers", "extract.layers"):
        layers = OmegaConf.select(cfg, key)
        bad = [int(x) for x in (layers or []) if int(x) >= num_layers]
        if bad:
            raise ConfigError(
                f"{key} has layers {bad} out of range: the model has {num_layers} layers (0..{num_layers - 1})."
            )


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def as_container(cfg: DictConfig | ListConfig) -> Any:
    return OmegaConf.to_container(cfg, resolve=True)
