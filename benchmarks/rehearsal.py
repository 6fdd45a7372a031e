"""Real-shape rehearsal: the real-MusicGen study, end to end through the CLI, on a random musicgen-small.

Builds (once) a random-weight checkpoint with the exact public configuration of ``facebook/musicgen-small``
into a Hugging Face hub cache (default ``~/.cache/steerlit/rehearsal-hub``; about 1.2 GB, ~1-2 min on 2 cores),
then runs ``steerlit run model=musicgen_small model.hf_cache_dir=<cache> ...`` in a subprocess at reduced length
(2 prompts per pole, 1 s clips, 3 α, 2 layers, 2 evaluation prompts, one seed, logger=none). Each stage is
timed from the CLI's progress lines (``[steerlit HH:MM:SS] ...``, timed on arrival) and its peak memory is the
largest resident set of the CLI's process tree (all DDP ranks summed) sampled every 0.5 s from /proc while that
stage ran; on CUDA the GPUs' used memory (nvidia-smi) too. Before running, the dry-run estimate of the same
settings is printed, so that estimate and measurement can be compared.

    nice python benchmarks/rehearsal.py                         # CPU, 1 process (~10-20 min on 2 cores)
    python benchmarks/rehearsal.py --device cuda --devices 2    # GPUs (trainer=ddp_gpus when devices > 1)
    python benchmarks/rehearsal.py --build-only                 # just build and check the checkpoint

The command line lives in :func:`cli_command` only; ``benchmarks/device_check.py`` runs the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steerlit.models.loading import cache_dir, load_model  # noqa: E402
from steerlit.models.musicgen_shapes import (  # noqa: E402
    DECODER_SHAPES,
    build_random_checkpoint,
    checkpoint_bytes,
    hub_id,
)

PROGRESS = re.compile(r"^\[steerlit \d\d:\d\d:\d\d\] (?P<msg>.*)$")
# Until `model=musicgen_*` brings the MusicGen probe sets by itself (issue 19, deliverable 1), name them; harmless
# after. Adjust here if the real-MusicGen study becomes an experiment (e.g. "experiment=musicgen_study").
STUDY = ("probe=tempo_timbre",)
REDUCED = {  # the reduced length of the rehearsal (everything else is the real-MusicGen study configuration)
    "probe.max_per_pole": "2",
    "steer.seconds": "1.0",
    "steer.alphas": "[-1,0,1]",
    "steer.n_prompts": "2",
    "steer.seeds": "[0]",
    "logger": "none",
}


def source_layers(num_layers: int) -> str:
    """Two source layers spread over the depth: a third and two thirds of the way (8 and 16 of 24)."""
    return f"[{num_layers // 3},{2 * num_layers // 3}]"


def cli_command(
    hub_cache: str | Path,
    *,
    size: str = "small",
    num_layers: int = 24,
    device: str = "cpu",
    devices: int = 1,
    output_dir: str | Path = "runs",
    run_name: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """THE rehearsal command line (``python -m steerlit.cli run ...``); every script runs this one.

    ``run_name=None`` leaves the CLI's own timestamped name, so that a DDP launch that made a folder per rank
    would show as several folders under ``output_dir``."""
    cuda = device == "cuda"
    trainer = ("ddp_gpus" if devices > 1 else "gpu") if cuda else ("ddp_cpu" if devices > 1 else "cpu")
    overrides = [
        f"model=musicgen_{size}",
        *STUDY,
        f"model.hf_cache_dir={hub_cache}",
        f"model.device={'cuda' if cuda else 'cpu'}",
        f"model.dtype={'float16' if cuda else 'float32'}",
        f"trainer={trainer}",
        f"trainer.devices={devices}",
        f"steer.layers={source_layers(num_layers)}",
        f"output_dir={output_dir}",
        *([f"run_name={run_name}"] if run_name else []),
        *(f"{k}={v}" for k, v in REDUCED.items()),
        *extra,
    ]
    return [sys.executable, "-m", "steerlit.cli", "run", *overrides]


def child_env(numba_cache: str | Path | None = None) -> dict[str, str]:
    """The subprocess environment: this checkout first on PYTHONPATH, unbuffered output, offline hub and W&B.

    ``numba_cache``: one NUMBA_CACHE_DIR for every run of a session, warmed by a one-process run before any DDP
    run (two processes compiling librosa's beat tracker at once can corrupt the cache; NOTES)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    return env


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None


@dataclass
class CliRun:
    command: list[str]
    returncode: int | None = None
    wall_s: float = 0.0
    peak_process_rss_mb: float = 0.0  # ru_maxrss of the largest child process
    stages: list[Stage] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (MB), from /proc (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def gpu_used_mb() -> float | None:
    """Memory used on all GPUs (MB), from nvidia-smi; None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return float(sum(float(x) for x in out.split()))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def read_lines(proc: subprocess.Popen, sink: list, echo: bool) -> None:
    for line in proc.stdout:
        sink.append((time.monotonic(), line.rstrip("\n")))
        if echo:
            print(line, end="", file=sys.stderr, flush=True)


def sample(
    proc: subprocess.Popen, lines: list, stages: dict, start: float, gpu: bool, timeout: float
) -> None:
    """Poll memory every 0.5 s, charging it to the stage of the last progress line; kill at ``timeout``."""
    while proc.poll() is None:
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        current = next(
            (PROGRESS.match(t).group("msg") for _, t in reversed(lines) if PROGRESS.match(t)), None
        )
        stage = stages.setdefault(stage_key(current), Stage(stage_key(current)))
        stage.peak_rss_mb = max(stage.peak_rss_mb, tree_rss_mb(proc.pid))
        if gpu:
            used = gpu_used_mb()
            if used is not None:
                stage.peak_gpu_mb = max(stage.peak_gpu_mb or 0.0, used)
        time.sleep(0.5)


def stage_key(message: str | None) -> str:
    """A stage name from a progress message: folder paths and counts stay, the run folder's path goes."""
    if message is None:
        return "startup (imports, config)"
    return re.sub(r" /\S+", " <path>", message)[:80]


def run_cli(
    command: list[str], env: dict, *, timeout: float = 3600.0, gpu: bool = False, echo=True
) -> CliRun:
    """Run ``command``; time every stage between progress lines and record its peak memory."""
    start = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list = []
    stages: dict[str, Stage] = {}
    reader = threading.Thread(target=read_lines, args=(proc, lines, echo), daemon=True)
    reader.start()
    sample(proc, lines, stages, start, gpu, timeout)
    proc.wait()
    reader.join(timeout=10)
    end = time.monotonic()
    marks = [(start, None)] + [(t, PROGRESS.match(x).group("msg")) for t, x in lines if PROGRESS.match(x)]
    for (t0, msg), (t1, _) in zip(marks, marks[1:] + [(end, None)]):
        stage = stages.setdefault(stage_key(msg), Stage(stage_key(msg)))
        stage.seconds += t1 - t0
    order = [stage_key(m) for _, m in marks]
    return CliRun(
        command=command,
        returncode=proc.returncode,
        wall_s=end - start,
        peak_process_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        stages=[stages[k] for k in dict.fromkeys(order)],
        tail=[x for _, x in lines[-25:]],
    )


def ensure_checkpoint(hub_cache: Path, size: str) -> tuple[Path, float]:
    """Build (or reuse) the random public-shape checkpoint; returns its snapshot and the build seconds."""
    t0 = time.perf_counter()
    snapshot = build_random_checkpoint(size, hub_cache)
    return snapshot, time.perf_counter() - t0


def check_loads(hub_cache: Path, size: str) -> str:
    """Load the checkpoint by hub id (fp32, CPU) and describe it."""
    adapter = load_model(hub_id(size), hf_cache_dir=str(hub_cache), dtype="float32")
    return json.dumps(adapter.describe())


def measure_step_costs(hub_cache: Path, size: str, device: str = "cpu") -> dict:
    """The short measurement behind ``steerlit/study/step_costs.py``'s CPU figures: load, per-step seconds at 1
    and 4 prompts (difference of 4- and 12-step calls, guidance 3), one extraction pass over 16 prompts, EnCodec
    decoding of 1 s and the clip metrics of a 10 s clip. Run it with ``--measure --threads 1`` under ``nice``."""
    import numpy as np
    import torch

    from steerlit.engines.hf import generate
    from steerlit.metrics.attributes import compute_attributes

    res, t0 = {}, time.perf_counter()
    dtype = "float16" if device == "cuda" else "float32"
    adapter = load_model(hub_id(size), hf_cache_dir=str(hub_cache), dtype=dtype, device=device)
    res["load_s"] = round(time.perf_counter() - t0, 2)

    def gen(batch: int, steps: int) -> float:
        t = time.perf_counter()
        prompts = ["an upbeat electronic dance track"] * batch
        generate(adapter, prompts, max_new_tokens=steps, seeds=list(range(batch)), decode_audio=False)
        return time.perf_counter() - t

    gen(1, 4)  # warm-up
    for batch in (1, 4):
        short, long = gen(batch, 4), gen(batch, 12)
        res[f"hf_step_s_b{batch}"] = round((long - short) / 8, 4)
    bos = adapter.model.generation_config.decoder_start_token_id
    inputs = adapter.tokenize(["a fast energetic rock song with drums"] * 16)
    dec = torch.full((16 * adapter.num_codebooks, 1), bos, dtype=torch.long, device=adapter.device)
    codes = torch.randint(
        0, 2048, (1, 1, adapter.num_codebooks, int(adapter.frame_rate)), device=adapter.device
    )
    with torch.inference_mode():
        for name, fn in (
            ("extract_batch16_s", lambda: adapter.model(**inputs, decoder_input_ids=dec)),
            ("encodec_1s_b1_s", lambda: adapter.model.audio_encoder.decode(codes, [None])),
        ):
            fn()
            t = time.perf_counter()
            fn()
            res[name] = round(time.perf_counter() - t, 3)
    sr = adapter.sample_rate
    clip = (0.1 * np.random.default_rng(0).standard_normal(10 * sr)).astype(np.float32)
    clip[:: sr // 2] += 1.0  # clicks at 120 BPM
    compute_attributes(clip[:sr], sr)  # numba compile
    t = time.perf_counter()
    compute_attributes(clip, sr)
    res["metrics_10s_clip_s"] = round(time.perf_counter() - t, 3)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def dry_run_estimate(command: list[str]) -> str:
    """The dry-run estimate of the command's settings (composed in-process; nothing loaded)."""
    try:  # imported here: the config/study packages must not stop a rehearsal whose CLI may still work
        from steerlit.config import compose
        from steerlit.study.estimate import estimate_for_study, format_estimate

        return format_estimate(estimate_for_study(compose(command[4:])))
    except Exception as err:  # the estimate is a nicety: report, never stop the rehearsal
        return f"(no estimate: {type(err).__name__}: {err})"


def stage_table(run: CliRun) -> str:
    lines = [
        "| stage (from the progress line that starts it) | seconds | peak RSS (tree) | peak GPU memory |"
    ]
    lines.append("|---|---|---|---|")
    for s in run.stages:
        gpu = "" if s.peak_gpu_mb is None else f"{s.peak_gpu_mb:,.0f} MB"
        lines.append(f"| {s.name} | {s.seconds:.1f} | {s.peak_rss_mb:,.0f} MB | {gpu} |")
    lines.append(
        f"| **total** (exit {run.returncode}) | **{run.wall_s:.1f}** | "
        f"{max((s.peak_rss_mb for s in run.stages), default=0):,.0f} MB | |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["small", "medium", "large"])
    ap.add_argument("--hub-cache", type=Path, default=cache_dir() / "rehearsal-hub")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "runs")
    ap.add_argument("--timeout", type=float, default=7200.0)
    ap.add_argument("--build-only", action="store_true", help="build the checkpoint, check it loads, stop")
    ap.add_argument("--measure", action="store_true", help="measure the per-step costs (step_costs.py), stop")
    ap.add_argument("--threads", type=int, help="torch threads for --measure")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("extra", nargs="*", help="more overrides for steerlit run (after the reduced ones)")
    args = ap.parse_args(argv)
    snapshot, build_s = ensure_checkpoint(args.hub_cache, args.size)
    print(f"checkpoint {snapshot} ({checkpoint_bytes(snapshot) / 1e9:.2f} GB, {build_s:.0f} s)", flush=True)
    if args.build_only:
        print(check_loads(args.hub_cache, args.size))
        return 0
    if args.measure:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(measure_step_costs(args.hub_cache, args.size, args.device)))
        return 0
    command = cli_command(
        args.hub_cache,
        size=args.size,
        num_layers=DECODER_SHAPES[args.size].layers,
        device=args.device,
        devices=args.devices,
        output_dir=args.out,
        run_name=f"rehearsal-{args.size}-{args.device}{args.devices}-{time.strftime('%Y%m%d-%H%M%S')}",
        extra=tuple(args.extra),
    )
    print("command: " + " ".join(command[1:]), flush=True)
    print(dry_run_estimate(command), flush=True)
    run = run_cli(command, child_env(), timeout=args.timeout, gpu=args.device == "cuda")
    print(stage_table(run))
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=1))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
