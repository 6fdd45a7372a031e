"""Steering overhead: steering hooks on ALL decoder layers vs plain ``generate``.

Same prompts, seeds and steps; the steered call adds a random direction (one_to_all from the
middle layer, i.e. one hook per layer). Both are timed in the same process after a warm-up, each
``--repeats`` times alternating, and the medians compared. Prints one JSON object per model.

    python benchmarks/steering_overhead.py --models tiny,small-shape --steps 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grid_throughput import PROMPTS, hardware, model_path, random_directions  # noqa: E402


def measure(
    model: str, *, steps: int, batch: int, repeats: int, device: str, dtype, engine: str = "hf"
) -> dict:
    from steerlit.engines.grid import GridRow, SteerTerm, row_steering
    from steerlit.engines.select import generate
    from steerlit.engines.settings import GenerationSettings
    from steerlit.models.loading import load_model

    adapter = load_model(model_path(model), device=device, dtype=dtype)
    directions = {"rand": random_directions(adapter)}
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    seeds = list(range(batch))
    term = SteerTerm("rand", "random", adapter.num_layers // 2, 1.0, "one_to_all")
    steering = row_steering(GridRow(prompts[0], 0, (term,)), directions, adapter.num_layers)
    n_sites = len(steering[0].vectors)
    settings = GenerationSettings(engine=engine)

    def run(steer):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(adapter, prompts, settings, max_new_tokens=steps, seeds=seeds, steering=steer)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    generate(
        adapter, prompts, settings, max_new_tokens=min(steps, 8), seeds=seeds, steering=steering
    )  # warm-up
    plain, steered = [], []
    for _ in range(repeats):
        plain.append(run(None))
        steered.append(run(steering))
    p, s = statistics.median(plain), statistics.median(steered)
    return {
        "benchmark": "steering_overhead",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": hardware(device),
        "torch": torch.__version__,
        "model": model,
        "engine": engine,
        "layers_hooked": n_sites,
        "device": device,
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "plain_s": [round(x, 3) for x in plain],
        "steered_s": [round(x, 3) for x in steered],
        "plain_median_s": round(p, 3),
        "steered_median_s": round(s, 3),
        "ratio": round(s / p, 4),
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,small-shape")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--engine", default="hf", help="hf | fast")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = []
    for model in args.models.split(","):
        res = measure(
            model,
            steps=args.steps,
            batch=args.batch,
            repeats=args.repeats,
            device=args.device,
            dtype=args.dtype,
            engine=args.engine,
        )
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


if __name__ == "__main__":
    main()
