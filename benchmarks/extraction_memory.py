"""Peak memory of the streaming diff-mean path for N and 10·N prompts.

Each measurement runs in a fresh subprocess (peak RSS, ``ru_maxrss``, only ever grows), and reports
the peak above the RSS measured right before the work starts (after imports / model loading).

* ``--mode synthetic`` (default): random (B, H) activations for L sites (musicgen-small shape:
  24 × 1024) fed batch by batch into :class:`~steerlit.directions.diffmean.ClassSums`.
* ``--mode tiny``: the real extraction loop (``Trainer.predict`` with ``ActivationCacheModule``) on a
  tiny random MusicGen and a generated probe set of N prompts per pole; the cache goes to a temp dir.

Usage: ``python benchmarks/extraction_memory.py [--mode synthetic|tiny] [--n 2000] [--factor 10]``.
Streaming means the peak should not grow with N (ratio ≈ 1); holding all activations would grow
~10× (for synthetic: N·L·H·4 bytes = 196 MB at N=2000).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_synthetic(n: int, layers: int, hidden: int, batch: int) -> dict:
    import torch

    from steerlit.directions.diffmean import ClassSums

    torch.set_num_threads(1)
    sites = [f"resid_post.{i}" for i in range(layers)]
    cs = ClassSums(sites, hidden)
    g = torch.Generator().manual_seed(0)
    base = rss_mb()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        labels = torch.arange(start, start + b) % 2
        for s in sites:
            cs.update(s, torch.randn(b, hidden, generator=g), labels)
    dirs = cs.directions()
    assert len(dirs) == layers
    return {"n": n, "base_mb": base, "peak_mb": peak_mb()}


def run_tiny(n: int, batch: int) -> dict:
    import torch

    from steerlit.data.probe_set import ProbeSet
    from steerlit.data.settings import ProbeSettings
    from steerlit.directions.extraction import extract_activations
    from steerlit.directions.settings import ExtractSettings
    from steerlit.models.loading import load_model
    from steerlit.runtime import TrainerSettings

    torch.set_num_threads(1)
    adapter = load_model("tiny")
    words = ["piano", "drums", "guitar", "synth", "strings", "bass", "choir", "flute"]
    pos = [f"fast {words[i % 8]} track number {i}" for i in range(n)]
    neg = [f"slow {words[i % 8]} piece number {i}" for i in range(n)]
    ps = ProbeSet("tempo", "", "fast", "slow", pos, neg)
    base = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        extract_activations(
            tmp,
            ps,
            adapter,
            ExtractSettings(batch_size=batch),
            ProbeSettings(),
            TrainerSettings(enable_progress_bar=False),
        )
    return {"n": 2 * n, "base_mb": base, "peak_mb": peak_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("synthetic", "tiny"), default="synthetic")
    ap.add_argument("--n", type=int, default=None, help="prompts (synthetic) or prompts per pole (tiny)")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        if args.mode == "synthetic":
            out = run_synthetic(args.child, args.layers, args.hidden, args.batch)
        else:
            out = run_tiny(args.child, args.batch)
        print(json.dumps(out))
        return
    n = args.n or (2000 if args.mode == "synthetic" else 100)
    results = []
    for size in (n, n * args.factor):
        cmd = [sys.executable, __file__, "--mode", args.mode, "--child", str(size)]
        cmd += ["--layers", str(args.layers), "--hidden", str(args.hidden), "--batch", str(args.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    small, big = results
    grow_small = small["peak_mb"] - small["base_mb"]
    grow_big = big["peak_mb"] - big["base_mb"]
    print(f"mode={args.mode}")
    for r in results:
        print(
            f"  N={r['n']:>7}: peak RSS {r['peak_mb']:8.1f} MB (work above baseline {r['peak_mb'] - r['base_mb']:7.1f} MB)"
        )
    print(f"  peak RSS ratio 10N/N: {big['peak_mb'] / small['peak_mb']:.3f}")
    print(f"  above-baseline growth: {grow_small:.1f} MB -> {grow_big:.1f} MB")
    if args.mode == "synthetic":
        held = n * args.factor * args.layers * args.hidden * 4 / 2**20
        print(f"  (holding all activations at 10N would need {held:.0f} MB)")


if __name__ == "__main__":
    main()
