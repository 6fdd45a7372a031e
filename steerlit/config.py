"""Configuration: the OmegaConf YAML tree in ``configs/``, composed and converted once into typed settings.

``configs/default.yaml`` names one file per concern (``model``, ``probe``, ``extract``, ``fit``,
``steer``, ``metrics``, ``logger``, ``trainer``); an ``experiment`` file is merged on top, then
command-line dotlist overrides (``steer.alphas=[-2,0,2] steer.layers=[6,12]``). Unknown keys and
wrong types fail with one :class:`ConfigError` before any model is loaded. :func:`compose` returns a frozen
:class:`~steerlit.study.settings.StudySettings`; the schema is that dataclass tree itself (``Literal`` fields give
the allowed choices), so no field is declared twice.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerlit.data.probe_set import resolve_probe_path
from steerlit.resources import resource_dir
from steerlit.study.settings import ConfigError, StudySettings, as_dict, check_layers, to_yaml

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

    A model given by hub id or folder (``model=facebook/musicgen-small``) brings those of
    ``configs/model/musicgen_small.yaml``; the shipped testbed and tiny models bring none."""
    name = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("model.name=")), None)
    if name is not None and "model" not in choices:
        if name in SHIPPED_MODELS:
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


def validate(settings: StudySettings) -> None:
    """Checks that need no model: non-empty grids, fitted methods, probe-set files present (choices and types
    are checked by the schema while composing)."""
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
    if steer.seconds <= 0:
        raise ConfigError(f"steer.seconds must be > 0, got {steer.seconds}.")
    for key, layers in (("steer.layers", steer.layers), ("extract.layers", settings.extract.layers)):
        if layers is not None and any(int(x) < 0 for x in layers):
            raise ConfigError(f"{key} has a negative layer: {list(layers)}.")
    for name in [*settings.probe.concepts, settings.probe.eval_set]:
        try:
            path = resolve_probe_path(name)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not Path(path).exists():
            raise ConfigError(f"Probe set {name!r} not found at {path}.")


__all__ = ["CONFIGS_DIR", "ConfigError", "as_dict", "check_layers", "compose", "to_yaml", "validate"]
