"""Sweeps from standard W&B sweep definitions, online (W&B agents) or offline (local enumeration).

A definition is what ``wandb sweep`` takes::

    name: alpha-layer
    method: grid            # grid | random | bayes
    metric: {name: tempo_change, goal: maximize}
    run_cap: 20             # optional (random/bayes default 10 offline)
    parameters:
      steer.alpha: {values: [0.5, 1.0, 2.0]}
      steer.layer: {values: [8, 12]}
      steer.method: {value: diffmean}
      gen.temperature: {min: 0.7, max: 1.2, distribution: uniform}

* **Online** (an API key from ``WANDB_API_KEY`` or ``wandb login``, and ``WANDB_MODE`` not
  offline/disabled): :func:`launch_agents` registers the sweep with ``wandb.sweep`` and starts one
  ``wandb agent`` subprocess per visible GPU (``CUDA_VISIBLE_DEVICES=i``). The agents run the
  definition's ``program``/``command``; the server chooses the points.
* **Offline**: :func:`sweep_points` enumerates the points locally (grid: full cartesian product;
  random: ``run_cap`` seeded samples; bayes: the open-source ``sweeps`` package when importable,
  else random with a warning) and :func:`run_local_sweep` calls ``run_fn(overrides)`` for each,
  one worker per device, each point in its own offline W&B run (``wandb sync`` uploads later).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("grid", "random", "bayes")
DEFAULT_RUN_CAP = 10
RunFn = Callable[[dict], Mapping]


class SweepDefinitionError(ValueError):
    """A sweep definition that cannot be run."""


# ---- definitions ---------------------------------------------------------------------------
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


# ---- offline runs --------------------------------------------------------------------------
def point_id(overrides: Mapping) -> str:
    text = json.dumps(dict(overrides), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _scalars(result: Mapping) -> dict:
    out = {}
    for k, v in dict(result or {}).items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out


def run_point(
    index: int, overrides: dict, run_fn: RunFn, out_dir: str, sweep_name: str, project: str | None = None
) -> dict:
    """One sweep point in its own offline W&B run under ``out_dir/<index>-<id>/``."""
    import wandb

    run_dir = Path(out_dir) / f"{index:03d}-{point_id(overrides)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"index": index, "overrides": dict(overrides), "run_dir": str(run_dir)}
    run = wandb.init(
        mode="offline",
        dir=str(run_dir),
        config=dict(overrides),
        group=sweep_name,
        project=project or "steerlit",
        name=f"{sweep_name}-{index:03d}",
        job_type="sweep",
        reinit="finish_previous",
    )
    summary["wandb_dir"] = str(Path(run.dir).parent)
    try:
        result = dict(run_fn(dict(overrides)) or {})
    except Exception as err:  # one failed point must not end the sweep
        log.exception("Sweep point %d failed", index)
        summary.update(status="failed", error=f"{type(err).__name__}: {err}", result={})
        if wandb.run is run:
            run.finish(exit_code=1)
        return summary
    scalars = _scalars(result)
    if wandb.run is run:  # run_fn may have reused and finished it (Lightning's WandbLogger does)
        run.summary.update(scalars)
        run.finish()
    summary.update(status="finished", result=scalars)
    return summary


_WORKER_DEVICE: str | None = None


def _init_worker(devices) -> None:
    """Pool initializer: take one device from the shared queue and pin this worker to it."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(_WORKER_DEVICE)


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []


def _metric_value(summary: Mapping, metric: Mapping | None):
    if not metric:
        return None
    v = summary.get("result", {}).get(metric.get("name"))
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _bayes_next(definition: Mapping, history: list[dict]) -> dict | None:
    """Next point from the ``sweeps`` package given finished points (only called when importable)."""
    import sweeps

    runs = []
    metric = definition["metric"]["name"]
    for i, h in enumerate(history):
        value = _metric_value(h, definition["metric"])
        runs.append(
            sweeps.SweepRun(
                name=f"run-{i}",
                state=sweeps.RunState.finished if h.get("status") == "finished" else sweeps.RunState.failed,
                config={k: {"value": v} for k, v in h["overrides"].items()},
                summary_metrics={metric: value} if value is not None else {},
            )
        )
    proposed = sweeps.next_run(dict(definition), runs, validate=False)
    return None if proposed is None else {k: v["value"] for k, v in proposed.config.items()}


def run_local_sweep(
    definition: Mapping | str | os.PathLike,
    run_fn: RunFn,
    *,
    out_dir: str | os.PathLike,
    name: str | None = None,
    project: str | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Run every point offline: ``run_fn(overrides)`` per point, each in its own offline W&B run.

    ``workers``: default one per visible GPU (each pinned with ``CUDA_VISIBLE_DEVICES``), 1 on
    CPU; with one worker points run in this process, otherwise in a spawned process pool (then
    ``run_fn`` must be picklable). Returns one summary per point (``index``, ``overrides``,
    ``status``, ``result``, ``run_dir``, ``wandb_dir``), also written to ``sweep_summary.json``.
    """
    definition = load_sweep(definition)
    name = name or definition.get("name") or "sweep"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DATA_DIR", str(out_dir / ".wandb-data"))
    os.environ.setdefault("WANDB_CACHE_DIR", str(out_dir / ".wandb-cache"))
    gpus = _visible_gpus()
    workers = workers or max(1, len(gpus))
    devices = (gpus + [None] * workers)[:workers] if gpus else [None] * workers
    method = definition["method"]

    if method == "bayes":
        ok, why = bayes_available()
        if ok:
            history = _bayes_loop(definition, run_fn, out_dir, name, project)
            _flush_wandb()
            return _finish(history, out_dir, definition)
        log.warning("bayes sweep %r runs as random search offline: %s.", name, why)
    points = sweep_points(definition, seed)
    if workers == 1:
        if devices[0] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(devices[0])
        summaries = [run_point(i, p, run_fn, str(out_dir), name, project) for i, p in enumerate(points)]
        _flush_wandb()
    else:
        summaries = _pool_run(points, run_fn, out_dir, name, project, devices)
    return _finish(summaries, out_dir, definition)


def _flush_wandb() -> None:
    """Offline runs are flushed to their ``.wandb`` files by the W&B service after ``finish()``
    returns; shutting the service down waits for it (the next ``wandb.init`` starts a new one)."""
    import wandb

    wandb.teardown()


def _pool_run(points, run_fn, out_dir, name, project, devices) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with mp.Manager() as manager:
        queue = manager.Queue()
        for d in devices:
            queue.put(d)
        with ProcessPoolExecutor(
            len(devices), mp_context=ctx, initializer=_init_worker, initargs=(queue,)
        ) as pool:
            futures = [
                pool.submit(run_point, i, p, run_fn, str(out_dir), name, project)
                for i, p in enumerate(points)
            ]
            return [f.result() for f in futures]


def _bayes_loop(definition, run_fn, out_dir, name, project) -> list[dict]:
    cap = int(definition.get("run_cap") or DEFAULT_RUN_CAP)
    history: list[dict] = []
    for i in range(cap):
        point = _bayes_next(definition, history)
        if point is None:
            break
        history.append(run_point(i, point, run_fn, str(out_dir), name, project))
    return history


def _finish(summaries: list[dict], out_dir: Path, definition: Mapping) -> list[dict]:
    summaries = sorted(summaries, key=lambda s: s["index"])
    metric = definition.get("metric")
    scored = [(s, _metric_value(s, metric)) for s in summaries]
    scored = [(s, v) for s, v in scored if v is not None]
    if scored:
        goal = (metric or {}).get("goal", "minimize")
        best = (max if goal == "maximize" else min)(scored, key=lambda sv: sv[1])[0]
        for s in summaries:
            s["best"] = s is best
    text = json.dumps(summaries, indent=1, default=str)
    tmp = out_dir / f".sweep_summary.json.tmp{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, out_dir / "sweep_summary.json")
    return summaries


# ---- reading offline runs ------------------------------------------------------------------
def _wandb_records(path: Path):
    """Raw records of a ``.wandb`` file (LevelDB-log framing: 7-byte file header, 32 KiB blocks,
    records with a 7-byte header: crc32 u32, length u16, type u8 = full/first/middle/last)."""
    import struct

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file.")
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0:  # zero padding up to the end of the block
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def read_offline_run(run_folder: str | os.PathLike) -> dict:
    """Config, summary, group and project of an offline run folder (``.../wandb/offline-run-*``).

    W&B >= 0.2x writes ``files/config.yaml`` only when syncing, so this reads the ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb2

    files = sorted(Path(run_folder).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"No .wandb file in {run_folder}.")
    out: dict = {"config": {}, "summary": {}, "group": None, "project": None}

    def items(updates, target):
        for it in updates:
            key = it.key or ".".join(it.nested_key)
            if key:
                target[key] = json.loads(it.value_json)

    for raw in _wandb_records(files[0]):
        rec = pb2.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["project"] = rec.run.run_group, rec.run.project
            items(rec.run.config.update, out["config"])
        elif kind == "config":
            items(rec.config.update, out["config"])
        elif kind == "summary":
            items(rec.summary.update, out["summary"])
    out["config"].pop("_wandb", None)
    return out


# ---- online (W&B server) -------------------------------------------------------------------
def wandb_online() -> bool:
    """True when W&B can reach its server: an API key is present and WANDB_MODE is not offline."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.api.api_key)
    except Exception:
        return False


def launch_agents(
    definition: Mapping | str | os.PathLike,
    *,
    project: str,
    entity: str | None = None,
    gpus: list[int] | None = None,
    count: int | None = None,
    command: list[str] | None = None,
    wait: bool = True,
) -> tuple[str, list[subprocess.Popen]]:
    """Register the sweep on the W&B server and start one ``wandb agent`` per GPU.

    The agents execute the definition's ``program``/``command`` (or ``command`` given here) with
    the chosen parameters. Returns ``(sweep_id, processes)``; with ``wait`` the agents are awaited.
    Not exercised offline: it needs the W&B server.
    """
    import wandb

    definition = load_sweep(definition)
    if command is not None:
        definition["command"] = list(command)
    if "program" not in definition and "command" not in definition:
        raise SweepDefinitionError(
            "An online sweep needs 'program' or 'command' in its definition: what each agent runs."
        )
    sweep_id = wandb.sweep(definition, project=project, entity=entity)
    path = "/".join(x for x in (entity, project, sweep_id) if x)
    gpus = list(gpus) if gpus is not None else (_visible_gpus() or [None])
    procs = []
    for gpu in gpus:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        args = ["wandb", "agent", *(["--count", str(count)] if count else []), path]
        procs.append(subprocess.Popen(args, env=env))
    if wait:
        for p in procs:
            p.wait()
    return sweep_id, procs


def run_sweep(
    definition: Mapping | str | os.PathLike,
    run_fn: RunFn | None = None,
    *,
    out_dir: str | os.PathLike,
    project: str = "steerlit",
    online: bool | None = None,
    **kwargs,
) -> list[dict] | str:
    """Online → :func:`launch_agents` (returns the sweep id); offline → :func:`run_local_sweep`."""
    online = wandb_online() if online is None else online
    if online:
        sweep_id, _ = launch_agents(definition, project=project, **kwargs)
        return sweep_id
    if run_fn is None:
        raise ValueError("An offline sweep needs run_fn(overrides) -> metrics.")
    return run_local_sweep(definition, run_fn, out_dir=out_dir, project=project, **kwargs)


# ---- the `steerlit sweep` command ----------------------------------------------------------
def _dotlist_item(key: str, value) -> str:
    """``key=value`` for OmegaConf dotlists (strings bare, everything else as JSON: lists, numbers)."""
    return f"{key}={value}" if isinstance(value, str) else f"{key}={json.dumps(value)}"


def summary_metrics(summary_rows) -> dict:
    """Flatten steerlit's summary rows (one per concept/method/layer/strategy group) into sweep
    metrics: ``summary/best_<col>`` (max over groups) and ``summary/mean_<col>`` per numeric column."""
    cols: dict[str, list[float]] = {}
    for row in summary_rows or []:
        for k, v in dict(row).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                cols.setdefault(k, []).append(float(v))
    out = {}
    for k, vals in cols.items():
        out[f"summary/best_{k}"] = max(vals)
        out[f"summary/mean_{k}"] = sum(vals) / len(vals)
    return out


def pipeline_point(overrides: Mapping, base_overrides=(), sweep_name: str = "sweep") -> dict:
    """A sweep point as a full ``steerlit run`` with ``base_overrides`` + the point's overrides."""
    import wandb

    from steerlit.config import compose
    from steerlit.pipeline import run_main

    dotlist = list(base_overrides) + [_dotlist_item(k, v) for k, v in overrides.items()]
    if not any(o.startswith("run_name=") for o in dotlist):
        dotlist.append(f"run_name={sweep_name}-{point_id(overrides)}")
    cfg = compose(dotlist)
    run = wandb.run  # the point's run: the pipeline's WandbLogger logs into it, but must not end it
    if run is not None:
        run.finish = lambda *args, **kwargs: None
    try:
        return summary_metrics(run_main(cfg))
    finally:
        if run is not None:
            del run.finish


def run_sweep_cli(
    sweep_file: str | os.PathLike,
    overrides=(),
    *,
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    project: str | None = None,
) -> int:
    """``steerlit sweep SWEEP.yaml [overrides]``: online, W&B agents run ``steerlit run <overrides>
    <point>`` (unless the definition has its own ``program``/``command``); offline, each point runs
    :func:`pipeline_point` locally in its own offline W&B run under ``runs/sweeps/<name>-<time>``."""
    import functools
    import time

    definition = load_sweep(sweep_file)
    name = definition.get("name") or Path(sweep_file).stem
    project = project or definition.get("project") or "steerlit"
    overrides = list(overrides or [])
    if wandb_online():
        command = None
        if "program" not in definition and "command" not in definition:
            command = ["${env}", "steerlit", "run", *overrides, "${args_no_hyphens}"]
        sweep_id, _ = launch_agents(definition, project=project, command=command)
        print(f"sweep {sweep_id} finished")
        return 0
    out_dir = Path(out_dir or Path("runs") / "sweeps" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_fn = functools.partial(pipeline_point, base_overrides=tuple(overrides), sweep_name=name)
    summaries = run_local_sweep(
        definition, run_fn, out_dir=out_dir, name=name, project=project, workers=workers
    )
    metric = (definition.get("metric") or {}).get("name")
    for s in summaries:
        value = s["result"].get(metric) if metric else None
        mark = " (best)" if s.get("best") else ""
        print(f"{s['index']:03d} {s['status']:8s} {metric}={value}{mark} {json.dumps(s['overrides'])}")
    print(f"offline runs in {out_dir}; upload with `wandb sync {out_dir}/*/wandb/offline-run-*`")
    return 0 if all(s["status"] == "finished" for s in summaries) else 1
