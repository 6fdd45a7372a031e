"""Configuration: the OmegaConf YAML tree in ``configs/``, composed and converted once into typed settings.

``configs/default.yaml`` names one file per concern (``model``, ``probe``, ``extract``, ``fit``,
``steer``, ``metrics``, ``logger``, ``trainer``); an ``experiment`` file is merged on top, then
command-line dotlist overrides (``steer.alphas=[-2,0,2] steer.layers=[6,12]``). Unknown keys and
wrong types fail with one :class:`ConfigError` before any model is loaded. :func:`compose` returns a frozen
:class:`~steerlit.study.settings.StudySettings`; the schema is that dataclass tree itself (``Literal`` fields give
the allowed choices), so no field is declared twice.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerlit.data.probe_set import (
    check_unique_names,
    load_eval_prompts,
    load_probe_set,
    validate_against_eval,
)
from steerlit.directions.extraction import check_extract_settings
from steerlit.intervene.schedules import make_schedule
from steerlit.metrics.attributes import ATTRIBUTE_NAMES
from steerlit.resources import resource_dir
from steerlit.study.settings import ConfigError, StudySettings, as_dict, check_layers, to_yaml
from steerlit.study.tables import attribute_for

CONFIGS_DIR = resource_dir("configs")
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


GENERIC_MUSICGEN = (
    "musicgen_small"  # a hub id or folder given as model=... takes this model file's `defaults:`
)
SHIPPED_MODELS = ("testbed", "tiny")
GPU_ACCELERATORS = ("gpu", "cuda")
GPU_DTYPE = (
    "float16"  # MusicGen's own half precision on CUDA (model.dtype=bfloat16 where the card supports it)
)


def _model_defaults(choices: dict, overrides: list[str], configs_dir: Path) -> dict:
    """The group choices a model file brings (its ``defaults:``: probe sets, grid, metrics, trainer).

    A model given by hub id (``model=facebook/musicgen-small``) brings those of ``configs/model/musicgen_small.yaml``;
    the shipped testbed and tiny models and local folders (whose size is unknown here) bring none: for a folder
    holding a MusicGen checkpoint, use ``model=musicgen_small model.name=DIR`` (or medium/large)."""
    name = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("model.name=")), None)
    if name is not None and "model" not in choices:
        if name in SHIPPED_MODELS or Path(name).expanduser().exists():
            return {}
        choices = {"model": GENERIC_MUSICGEN}
    if "model" not in choices:
        return {}
    node = _read_yaml(configs_dir / "model" / f"{choices['model']}.yaml", "model")
    return dict(node.get("defaults", {}))


def _group_layers(choices: dict, configs_dir: Path) -> list[DictConfig]:
    layers = []
    for group in GROUPS:
        if group in choices:
            node = _read_yaml(configs_dir / group / f"{choices[group]}.yaml", group)
            node = OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])
            layers.append(OmegaConf.create({group: node}))
    return layers


def _device_layer(merged: DictConfig, layers: list[DictConfig]) -> DictConfig:
    """One device setting: ``model.device`` follows ``trainer.accelerator`` (cuda, in float16, on a GPU trainer)
    unless a layer sets it; a set device that contradicts the trainer is an error before anything loads."""
    accelerator = str(merged.trainer.accelerator)
    wants_gpu = accelerator in GPU_ACCELERATORS
    explicit = [OmegaConf.select(layer, "model.device") for layer in layers]
    explicit = [d for d in explicit if d is not None]
    if not explicit:
        model = {"device": "cuda" if wants_gpu else "cpu"}
        if wants_gpu and not any(OmegaConf.select(layer, "model.dtype") for layer in layers):
            model["dtype"] = GPU_DTYPE
        return OmegaConf.create({"model": model})
    device = str(explicit[-1])
    if device.startswith("cuda") != wants_gpu:
        fix = "trainer=gpu (or trainer=ddp_gpus)" if device.startswith("cuda") else "trainer=cpu"
        raise ConfigError(
            f"model.device={device} contradicts trainer.accelerator={accelerator}: use {fix}, or drop "
            "model.device (it follows the trainer: cuda in float16 on a GPU trainer, else cpu)."
        )
    return OmegaConf.create({})


def compose(
    overrides: list[str] | None = None,
    *,
    config_path: str | Path | None = None,
    configs_dir: Path = CONFIGS_DIR,
) -> StudySettings:
    """Build the run settings: schema ← group files (default.yaml's choices ← the model file's ``defaults:`` ←
    the experiment's ← the command line's) ← default.yaml ← experiment ← user file ← dotlist overrides."""
    overrides, group_choices = _expand_aliases(list(overrides or []), configs_dir)
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    overrides = [o for o in overrides if not o.startswith("experiment=")]
    default = (
        _read_yaml(configs_dir / "default.yaml", "Config")
        if (configs_dir / "default.yaml").exists()
        else None
    )
    base = dict(default.get("defaults", {})) if default is not None else {}
    exp = _read_yaml(configs_dir / "experiment" / f"{experiment}.yaml", "Experiment") if experiment else None
    exp_choices = dict(exp.get("defaults", {})) if exp is not None else {}
    model_choice = {k: v for k, v in {**base, **exp_choices, **group_choices}.items() if k == "model"}
    if "model" not in {**exp_choices, **group_choices}:
        model_choice = {} if any(o.startswith("model.name=") for o in overrides) else model_choice
    model_defaults = _model_defaults(model_choice, overrides, configs_dir)
    choices = {**base, **model_defaults, **exp_choices, **group_choices}
    layers: list = [OmegaConf.structured(StudySettings), *_group_layers(choices, configs_dir)]
    if default is not None:
        layers.append(OmegaConf.masked_copy(default, [k for k in default if k != "defaults"]))
    if exp is not None:
        layers.append(OmegaConf.masked_copy(exp, [k for k in exp if k != "defaults"]))
        layers.append(OmegaConf.create({"experiment": experiment}))
    if config_path is not None:
        layers.append(_read_yaml(Path(config_path), "Config file"))
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        device = _device_layer(OmegaConf.merge(*layers), layers[1:])
        settings = OmegaConf.to_object(OmegaConf.merge(*layers, device))
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err, layers[1:])) from None
    validate(settings)
    return settings


def _explain(err: OmegaConfBaseException, layers: list[DictConfig]) -> str:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if "Key" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(StudySettings)
        valid = sorted(OmegaConf.select(node, parent).keys()) if parent else sorted(node.keys())
        return f"Unknown config key {key!r}; valid keys{' under ' + parent if parent else ''}: {valid}."
    if not key:  # a bad list element: OmegaConf names neither the list nor the element
        found = _bad_list_element(layers)
        if found is not None:
            key, index, value, msg = found
            return f"Bad value for config key {key!r} (item {index}, {value!r}): {msg}"
    if "is not a TupleConfig" in msg or "is not a ListConfig" in msg:
        return f"Bad value for config key {key!r}: it takes a list, not one value; write e.g. {key}=[-2,0,2]."
    return f"Bad value for config key {key!r}: {msg}"


def _list_items(node: DictConfig, prefix: str = ""):
    """``(dotted key, list)`` for every list in a config layer."""
    for name, value in node.items_ex(resolve=False):
        key = f"{prefix}{name}"
        if isinstance(value, DictConfig):
            yield from _list_items(value, f"{key}.")
        elif isinstance(value, ListConfig):
            yield key, list(value)


def _bad_list_element(layers: list[DictConfig]) -> tuple[str, int, object, str] | None:
    """The first list element that the schema refuses: (key, index, value, message with the allowed values)."""
    schema = OmegaConf.structured(StudySettings)
    for layer in layers:
        for key, items in _list_items(layer):
            for index, value in enumerate(items):
                try:
                    OmegaConf.merge(schema, _nested(key, [value]))
                except OmegaConfBaseException as err:
                    msg = str(err).splitlines()[0]
                    msg = msg.replace("$VALUE_TYPE", type(value).__name__).replace("$VALUE", str(value))
                    return key, index, value, msg
    return None


def _nested(key: str, value) -> DictConfig:
    node = OmegaConf.create({})
    OmegaConf.update(node, key, value, force_add=True)
    return node


# What a concept's attribute can be (clap_score: with a CLAP model).
MEASURABLE = (*ATTRIBUTE_NAMES, "clap_score")


def validate(settings: StudySettings) -> None:
    """Every check that needs no model weights (choices and types are checked by the schema while composing):
    the grid, generation settings, layers, schedule, and the contents of every probe file. Runs before any
    work or folder (``compose`` calls it; so do ``run``, ``extract``, ``fit``, ``steer`` and ``generate``)."""
    steer = settings.steer
    if not steer.alphas:
        raise ConfigError("steer.alphas is empty: give at least one α, e.g. steer.alphas=[-2,0,2].")
    if not steer.seeds:
        raise ConfigError("steer.seeds is empty: give at least one seed, e.g. steer.seeds=[0].")
    if not settings.probe.concepts:
        raise ConfigError("probe.concepts is empty: name at least one probe set (e.g. tempo).")
    missing = [m for m in steer.methods if m not in settings.fit.methods]
    if missing:
        raise ConfigError(f"steer.methods {missing} are not fitted; add them to fit.methods.")
    if not steer.strategies:
        raise ConfigError("steer.strategies is empty; use one_to_one and/or one_to_all.")
    try:
        check_extract_settings(settings.extract)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if settings.metrics.workers < 0:
        raise ConfigError(
            f"metrics.workers must be >= 0 (0: measure in the run's own process), got {settings.metrics.workers}."
        )
    validate_generation(steer)
    validate_layers(settings)
    validate_probe_files(settings)


def validate_generation(steer) -> None:
    """α values, clip length, batch size, temperature, prompt count and the schedule of ``steer``."""
    bad = [a for a in steer.alphas if not math.isfinite(float(a))]
    if bad:
        raise ConfigError(f"steer.alphas must be finite numbers, got {bad} in {list(steer.alphas)}.")
    for key, value in (("seconds", steer.seconds), ("batch_size", steer.batch_size)):
        if value <= 0:
            raise ConfigError(f"steer.{key} must be > 0, got {value}.")
    if steer.temperature <= 0:
        raise ConfigError(
            f"steer.temperature must be > 0, got {steer.temperature} (for greedy decoding use steer.top_k=1)."
        )
    if steer.n_prompts is not None and steer.n_prompts <= 0:
        raise ConfigError(
            f"steer.n_prompts must be >= 1, got {steer.n_prompts} (use steer.n_prompts=null for all prompts)."
        )
    schedule = (
        OmegaConf.to_container(steer.schedule) if OmegaConf.is_config(steer.schedule) else steer.schedule
    )
    glued = [k for k in (schedule if isinstance(schedule, dict) else {}) if ":" in str(k)]
    if glued or (isinstance(schedule, str) and ":" in schedule):  # `{kind:foo}`: YAML reads one key
        raise ConfigError(
            f"steer.schedule has {(glued or [schedule])[0]!r}: put a space after each colon, e.g. "
            "'steer.schedule={kind: exp_decay, rate: 0.1}'."
        )
    try:
        make_schedule(schedule)
    except ValueError as err:
        raise ConfigError(f"steer.schedule: {err}") from None


def validate_layers(settings: StudySettings) -> None:
    """No negative layer; the grid's source layers among the extracted ones (when extract.layers is set)."""
    steer_layers, extract_layers = settings.steer.layers, settings.extract.layers
    for key, layers in (("steer.layers", steer_layers), ("extract.layers", extract_layers)):
        if layers is not None and any(int(x) < 0 for x in layers):
            raise ConfigError(f"{key} has a negative layer: {list(layers)}.")
    if steer_layers and extract_layers is not None:
        outside = sorted(set(map(int, steer_layers)) - set(map(int, extract_layers)))
        if outside:
            raise ConfigError(
                f"steer.layers {outside} are not extracted (extract.layers={list(extract_layers)}); add them "
                "to extract.layers, or leave extract.layers=null for every layer."
            )


def validate_probe_files(settings: StudySettings) -> None:
    """Every probe set and the evaluation set load; each concept has an attribute that measures it; no two
    probe sets share a name; no probe prompt is also an evaluation prompt (the evaluation must be held out)."""
    probe_sets = []
    for name in settings.probe.concepts:
        try:
            probe_set = load_probe_set(name)
            attribute = attribute_for(probe_set.name, settings.metrics.attributes)
        except ValueError as err:
            raise ConfigError(f"probe.concepts {name!r}: {err}") from None
        if attribute not in MEASURABLE:
            raise ConfigError(
                f"metrics.attributes.{probe_set.name}={attribute!r} is not an attribute steerlit measures; "
                f"use one of {list(MEASURABLE)}."
            )
        probe_sets.append(probe_set)
    try:
        eval_prompts = load_eval_prompts(settings.probe.eval_set)
    except ValueError as err:
        raise ConfigError(f"probe.eval_set {settings.probe.eval_set!r}: {err}") from None
    try:
        check_unique_names(probe_sets)
        for probe_set in probe_sets:
            validate_against_eval(probe_set, eval_prompts, f"evaluation set {settings.probe.eval_set!r}")
    except ValueError as err:
        raise ConfigError(f"probe.concepts: {err}") from None


__all__ = ["CONFIGS_DIR", "ConfigError", "as_dict", "check_layers", "compose", "to_yaml", "validate"]
