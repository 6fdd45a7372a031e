"""Sweeps from standard W&B sweep definitions, online (W&B agents) or offline (local enumeration).

A definition is what ``wandb sweep`` takes; parameter names are steerlit config keys (``steerlit config``
prints them all)::

    name: alpha-layer
    method: grid            # grid | random | bayes
    metric: {name: best/abs_spearman, goal: maximize}
    command: ["${env}", "${interpreter}", -m, steerlit.sweeps.agent, "${args_no_hyphens}"]
    run_cap: 20             # optional (random/bayes default 10 offline)
    parameters:
      experiment: {value: smoke}
      steer.alphas: {values: [[-2, 0, 2], [-4, 0, 4]]}
      steer.layers: {values: [[1], [2]]}
      steer.methods: {value: [diffmean]}
      steer.temperature: {min: 0.7, max: 1.2, distribution: uniform}

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
    """One sweep point in its own offline W&B run under ``out_dir/<index>-<id>/``; with ``project=None`` the
    point makes its own W&B run (a study does), and ``run_fn``'s result is only recorded."""
    import wandb  # deferred: wandb

    run_dir = Path(out_dir) / f"{index:03d}-{point_id(overrides)}"
    summary = {"index": index, "overrides": dict(overrides), "run_dir": str(run_dir)}
    if project is None:
        return point_without_run(summary, overrides, run_fn)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        mode="offline",
        dir=str(run_dir),
        config=dict(overrides),
        group=sweep_name,
        project=project,
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
    run.summary.update(scalars)
    run.finish()
    summary.update(status="finished", result=scalars)
    return summary


def point_without_run(summary: dict, overrides: dict, run_fn: RunFn) -> dict:
    """A point whose ``run_fn`` makes its own W&B run (e.g. a ``steerlit.sweeps.agent`` subprocess)."""
    try:
        summary.update(status="finished", result=_scalars(run_fn(dict(overrides))))
    except Exception as err:  # one failed point must not end the sweep
        log.exception("Sweep point %d failed", summary["index"])
        summary.update(status="failed", error=f"{type(err).__name__}: {err}", result={})
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
    project: str | None = "steerlit",
    workers: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Run every point offline: ``run_fn(overrides)`` per point, each in its own offline W&B run (in W&B
    ``project``; ``project=None``: ``run_fn`` makes the point's W&B run itself).

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
