"""Grid throughput: K rows as one batched grid vs the naive loop of K ``generate`` calls.

Both are measured in the same process, on the same rows (prompts, seeds, steering), after one
warm-up call; the script prints one JSON object with audio-seconds per wall-second for each path,
their ratio, and whether the codes agree row for row.

    python benchmarks/grid_throughput.py --model tiny --rows 16 --steps 100
    python benchmarks/grid_throughput.py --model small-shape --rows 4 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

SMALL_SHAPE = dict(  # musicgen-small's decoder and text-encoder widths, random weights
    hidden_size=1024, num_layers=24, num_heads=16, ffn_dim=4096, codebook_size=2048, text_d_model=768
)
PROMPTS = [
    "an upbeat electronic dance track with punchy drums",
    "a slow sad piano ballad",
    "lofi hip hop beat with vinyl crackle",
    "bright orchestral fanfare with brass",
]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def hardware(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def model_path(kind: str) -> str:
    """``tiny``, ``small-shape`` (built once into the steerlit cache) or a folder / hub id."""
    from steerlit.models.loading import cache_dir
    from steerlit.models.tiny import build_tiny_musicgen

    if kind == "tiny":
        return "tiny"
    if kind == "small-shape":
        path = cache_dir() / "bench-small-shape-seed0"
        if not (path / "config.json").exists():
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            build_tiny_musicgen(tmp, seed=0, **SMALL_SHAPE)
            tmp.replace(path)
        return str(path)
    return kind


def random_directions(adapter, seed: int = 0, norm: float = 4.0):
    """A DirectionSet of random vectors (norm ``norm``) at every resid_post site, method ``random``."""
    from steerlit.directions.io import DirectionSet

    g = torch.Generator().manual_seed(seed)
    vecs = {}
    for site in adapter.sites(("resid_post",)):
        v = torch.randn(adapter.hidden_size, generator=g)
        vecs[("random", site)] = v / v.norm() * norm
    return DirectionSet(vecs, {"model_id": str(adapter.model_id)})


def bench_rows(adapter, n: int):
    """``n`` rows: prompts cycled, distinct seeds, α cycling over 0 (reference), 1, 2, 4 (one_to_all
    from the middle layer)."""
    from steerlit.engines.grid import GridRow, SteerTerm

    rows = []
    for i in range(n):
        alpha = (0.0, 1.0, 2.0, 4.0)[i % 4]
        terms = () if alpha == 0 else (SteerTerm("rand", "random", adapter.num_layers // 2, alpha),)
        rows.append(GridRow(PROMPTS[i % len(PROMPTS)], 1000 + i, terms, i % len(PROMPTS)))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny | small-shape | folder | hub id")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--steps", type=int, default=100, help="max_new_tokens per row")
    p.add_argument("--batch-size", type=int, default=None, help="default: all rows in one batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--engine", default="hf", help="hf | fast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from steerlit.engines.runner import audio_seconds, run_grid, run_naive
    from steerlit.engines.settings import GenerationSettings
    from steerlit.models.loading import load_model

    adapter = load_model(model_path(args.model), device=args.device, dtype=args.dtype)
    directions = {"rand": random_directions(adapter)}
    rows = bench_rows(adapter, args.rows)

    def settings(steps: int, batch_size: int | None = None) -> GenerationSettings:  # exactly ``steps`` steps
        seconds = audio_seconds(adapter, steps)
        return GenerationSettings(seconds, args.guidance, batch_size=batch_size, engine=args.engine)

    run_naive(adapter, rows[:1], directions, settings(min(args.steps, 8)))

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    batched = run_grid(
        adapter, rows, directions, settings(args.steps, args.batch_size or len(rows)), progress=False
    )
    sync()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = run_naive(adapter, rows, directions, settings(args.steps))
    sync()
    t_naive = time.perf_counter() - t0

    secs = audio_seconds(adapter, args.steps) * len(rows)
    same = [a["codes_sha1"] for a in batched] == [b["codes_sha1"] for b in naive]
    result = {
        "benchmark": "grid_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": hardware(args.device),
        "torch": torch.__version__,
        "model": args.model,
        "engine": args.engine,
        "device": args.device,
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "rows": len(rows),
        "steps": args.steps,
        "batch_size": args.batch_size or len(rows),
        "audio_seconds_total": round(secs, 3),
        "batched_wall_s": round(t_batched, 3),
        "naive_wall_s": round(t_naive, 3),
        "batched_audio_s_per_s": round(secs / t_batched, 4),
        "naive_audio_s_per_s": round(secs / t_naive, 4),
        "speedup": round(t_naive / t_batched, 3),
        "codes_identical": same,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
