"""CUDA-graph replay of the fast decode step (CUDA only; never imported on the CPU path).

All step state lives on the GPU (:class:`~steerlit.generate.fast_engine.FastDecoder`: step counter,
raw ids, delay pattern, KV cache, steering tables, seeds), so one step is a fixed sequence of
kernels with no host sync. Steps are grouped into KV-length buckets of ``bucket`` steps: bucket
``b`` covers steps ``[b·bucket, (b+1)·bucket)`` and its attention reads the first
``min((b+1)·bucket, L)`` cache entries (later entries are masked by the device step counter).

For each bucket, its first step runs eagerly on a side stream (this is the real step and the
warm-up that initialises cuBLAS/SDPA/compiled kernels); the step is then captured once into a
``torch.cuda.CUDAGraph`` (capturing executes nothing) and replayed for the bucket's remaining steps.
All graphs share one memory pool: they replay strictly one after another and keep no outputs
(every result is written into preallocated buffers).
"""

from __future__ import annotations

import torch


def bucket_end(t: int, bucket: int, length: int) -> int:
    """Cache entries read at step ``t``: the end of its bucket, at most ``length``."""
    return min((t // bucket + 1) * bucket, length)


def run_bucketed(dec, num_steps: int, bucket: int, *, deterministic: bool = False, compiled=None) -> None:
    """The graph-shaped step (device step counter, fixed-length masked cache) run eagerly, on any
    device: the reference that graph replay must match bit for bit."""
    kw = {"deterministic": deterministic, "compiled": compiled}
    dec.step_t.zero_()
    for t in range(num_steps):
        dec.step(None, bucket_end(t, bucket, dec.length), **kw)


def run_with_graphs(dec, num_steps: int, bucket: int, *, deterministic: bool = False, compiled=None) -> None:
    """Run ``num_steps`` decoding steps of ``dec`` (a ``FastDecoder`` on CUDA) with graph replay."""
    if dec.raw.device.type != "cuda":
        raise ValueError("run_with_graphs needs a FastDecoder on CUDA.")
    kw = {"deterministic": deterministic, "compiled": compiled}
    pool = None
    side = torch.cuda.Stream(device=dec.raw.device)
    dec.step_t.zero_()
    t = 0
    while t < num_steps:
        kv_len = bucket_end(t, bucket, dec.length)
        stop = min((t // bucket + 1) * bucket, num_steps)
        # the bucket's first step: eager on a side stream (doubles as warm-up)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            dec.step(None, kv_len, **kw)
        torch.cuda.current_stream().wait_stream(side)
        t += 1
        if t >= stop:
            continue
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            dec.step(None, kv_len, **kw)
        pool = graph.pool() if pool is None else pool
        while t < stop:
            graph.replay()
            t += 1
    torch.cuda.current_stream().synchronize()
