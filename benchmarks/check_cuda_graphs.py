"""GPU check of the fast engine's CUDA-graph path (not a CI test: CI has no GPU).

On a CUDA machine, in fp32 with deterministic attention: graph replay must equal the same bucketed
step run eagerly, reused graphs must equal fresh ones, and codes must agree with HF ``generate``
on > 99 % of entries. Exits non-zero on a mismatch.

Usage: ``python benchmarks/check_cuda_graphs.py [--model tiny]``
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    from steerlit.engines.fast.engine import fast_generate
    from steerlit.engines.fast.state import clear_fast_cache
    from steerlit.engines.hf import generate
    from steerlit.intervene.steer import Intervention
    from steerlit.models.loading import load_model

    adapter = load_model(args.model, device="cuda")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(adapter.hidden_size, generator=g)
    prompts = ["a fast techno track", "slow jazz piano", "bright strings"]
    rows = [
        [],
        [Intervention({"resid_post.1": v}, 2.0)],
        [Intervention({"mlp_out.0": v}, 0.5, operator="norm_add")],
    ]
    kw = dict(max_new_tokens=150, seeds=[1, 2, 3], steering=rows, decode_audio=False)
    clear_fast_cache()
    eager = fast_generate(adapter, prompts, use_cuda_graphs=False, bucketed=True, deterministic=True, **kw)
    graphed = [fast_generate(adapter, prompts, deterministic=True, **kw) for _ in range(2)]
    same = all(torch.equal(out.sequences, eager.sequences) for out in graphed)
    agree = float((graphed[0].codes == generate(adapter, prompts, **kw).codes).float().mean())
    clear_fast_cache()
    print(f"graph replay == eager bucketed step: {same}; agreement with HF generate: {agree:.4f}")
    return 0 if same and agree > 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
