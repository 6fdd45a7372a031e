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
import json
import logging
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from steerlit.sweeps.definition import (
    DEFAULT_RUN_CAP,
    SweepDefinitionError,
    bayes_available,
    load_sweep,
    sweep_points,
)

log = logging.getLogger(__name__)

RunFn = Callable[[dict], Mapping]


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
    from steerlit.study.run import run_study

    dotlist = list(base_overrides) + [_dotlist_item(k, v) for k, v in overrides.items()]
    if not any(o.startswith("run_name=") for o in dotlist):
        dotlist.append(f"run_name={sweep_name}-{point_id(overrides)}")
    cfg = compose(dotlist)
    run = wandb.run  # the point's run: the pipeline's WandbLogger logs into it, but must not end it
    if run is not None:
        run.finish = lambda *args, **kwargs: None
    try:
        return summary_metrics([row.to_row() for row in run_study(cfg)])
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
