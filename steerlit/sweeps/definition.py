"""W&B sweep definitions read and enumerated locally (grid, seeded random, bayes via the ``sweeps`` package).

See :mod:`steerlit.sweeps.local` for running them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("grid", "random", "bayes")
DEFAULT_RUN_CAP = 10


class SweepDefinitionError(ValueError):
    """A sweep definition that cannot be run."""


def load_sweep(source: str | os.PathLike | Mapping) -> dict:
    """A sweep definition from a YAML/JSON file or a mapping, validated."""
    if isinstance(source, Mapping):
        definition = dict(source)
    else:
        import yaml

        path = Path(source)
        if not path.exists():
            raise SweepDefinitionError(f"Sweep file {path} does not exist.")
        definition = yaml.safe_load(path.read_text()) or {}
    validate_sweep(definition)
    return definition


def flatten_parameters(params: Mapping, prefix: str = "") -> dict[str, dict]:
    """``{name: spec}`` with W&B's nested ``{parameters: {...}}`` groups flattened to dotted names."""
    out = {}
    for name, spec in params.items():
        full = f"{prefix}{name}"
        if not isinstance(spec, Mapping):
            raise SweepDefinitionError(
                f"Parameter {full!r} must be a mapping like {{values: [...]}}, got {spec!r}."
            )
        if "parameters" in spec:
            out.update(flatten_parameters(spec["parameters"], f"{full}."))
        else:
            out[full] = dict(spec)
    return out


def validate_sweep(definition: Mapping) -> None:
    method = definition.get("method")
    if method not in METHODS:
        raise SweepDefinitionError(f"Sweep method {method!r} is not one of {METHODS}.")
    params = definition.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise SweepDefinitionError("A sweep needs a non-empty 'parameters' mapping.")
    flat = flatten_parameters(params)
    for name, spec in flat.items():
        if not ({"value", "values"} & set(spec) or {"min", "max"} <= set(spec) or "distribution" in spec):
            raise SweepDefinitionError(
                f"Parameter {name!r} needs 'value', 'values', or 'min'/'max' (with a 'distribution'); got {spec}."
            )
    metric = definition.get("metric")
    if method == "bayes" and not (isinstance(metric, Mapping) and metric.get("name")):
        raise SweepDefinitionError("A bayes sweep needs 'metric: {name: ..., goal: minimize|maximize}'.")


def _distribution(spec: Mapping) -> str:
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    ints = isinstance(spec["min"], int) and isinstance(spec["max"], int)
    return "int_uniform" if ints else "uniform"


def _grid_values(name: str, spec: Mapping) -> list:
    dist = _distribution(spec)
    if dist == "constant":
        return [spec["value"]]
    if dist == "categorical":
        return list(spec["values"])
    if dist == "int_uniform":
        return list(range(int(spec["min"]), int(spec["max"]) + 1))
    raise SweepDefinitionError(
        f"Grid sweeps need discrete parameters; {name!r} has distribution {dist!r}. Give 'values' instead."
    )


def _sample(name: str, spec: Mapping, rng: np.random.Generator):
    dist = _distribution(spec)
    lo, hi = spec.get("min"), spec.get("max")
    q = spec.get("q", 1)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        values = list(spec["values"])
        p = spec.get("probabilities")
        return values[int(rng.choice(len(values), p=p))]
    if dist == "int_uniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    if dist == "uniform":
        return float(rng.uniform(lo, hi))
    if dist == "q_uniform":
        return float(np.round(rng.uniform(lo, hi) / q) * q)
    if dist == "log_uniform":  # W&B: min/max are natural-log exponents
        return float(math.exp(rng.uniform(lo, hi)))
    if dist in ("log_uniform_values", "q_log_uniform_values"):
        x = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return float(np.round(x / q) * q) if dist.startswith("q_") else x
    if dist == "normal":
        return float(rng.normal(spec.get("mu", 0.0), spec.get("sigma", 1.0)))
    if dist == "log_normal":
        return float(math.exp(rng.normal(spec.get("mu", 0.0), spec.get("sigma", 1.0))))
    raise SweepDefinitionError(f"Distribution {dist!r} of parameter {name!r} is not supported offline.")


def grid_points(definition: Mapping) -> list[dict]:
    flat = flatten_parameters(definition["parameters"])
    names = list(flat)
    combos = itertools.product(*(_grid_values(n, flat[n]) for n in names))
    points = [dict(zip(names, c)) for c in combos]
    cap = definition.get("run_cap")
    return points[: int(cap)] if cap else points


def random_points(definition: Mapping, seed: int = 0, n: int | None = None) -> list[dict]:
    flat = flatten_parameters(definition["parameters"])
    n = n or int(definition.get("run_cap") or DEFAULT_RUN_CAP)
    rng = np.random.default_rng(seed)
    return [{name: _sample(name, spec, rng) for name, spec in flat.items()} for _ in range(n)]


def bayes_available() -> tuple[bool, str]:
    try:
        import sweeps  # noqa: F401
    except Exception as err:  # ImportError, or numpy-version clashes inside the package
        return False, f"the 'sweeps' package is not importable ({type(err).__name__}: {err})"
    return True, ""


def sweep_points(definition: Mapping, seed: int = 0) -> list[dict]:
    """Points of a grid or random sweep, or of a bayes sweep run without feedback (= random).

    Bayes with feedback needs results between points: :func:`run_local_sweep` does that when the
    ``sweeps`` package is importable."""
    validate_sweep(definition)
    method = definition["method"]
    if method == "grid":
        return grid_points(definition)
    return random_points(definition, seed)
