"""CUDA-graph replay of the fast decode step (CUDA only; never imported on the CPU path).

All step state lives on the GPU (:class:`~steerlit.engines.fast.state.FastDecoder`: step counter,
raw ids, delay pattern, KV cache, steering tables, seeds), so one step is a fixed sequence of
kernels with no host sync. Steps are grouped into KV-length buckets of ``bucket`` steps: bucket
``b`` covers steps ``[b·bucket, (b+1)·bucket)`` and its attention reads the first
``min((b+1)·bucket, L)`` cache entries (later entries are masked by the device step counter).

The first time a bucket is reached, its first step runs eagerly on a side stream (this is the real
step and the warm-up that initialises cuBLAS/SDPA/compiled kernels); the step is then captured
once into a ``torch.cuda.CUDAGraph`` (capturing executes nothing) and replayed for the bucket's
remaining steps, and for all its steps in later calls that reuse the same decoder. All graphs share
one memory pool: they replay strictly one after another and keep no outputs (every result is
written into preallocated buffers).
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


class GraphSet:
    """Captured step graphs of one :class:`~steerlit.engines.fast.state.FastDecoder`, per bucket.

    Graphs read and write the decoder's tensors by address: keep a GraphSet with the decoder it was
    captured on (see :func:`steerlit.engines.fast.state.cached_decoder`), never with another.
    """

    def __init__(self):
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None

    def run(self, dec, num_steps: int, bucket: int, *, deterministic: bool = False, compiled=None) -> None:
        """Run ``num_steps`` steps of ``dec`` (on CUDA, loaded, step counter at 0) with graph replay."""
        if dec.raw.device.type != "cuda":
            raise ValueError("CUDA graphs need a FastDecoder on CUDA.")
        kw = {"deterministic": deterministic, "compiled": compiled}
        side = torch.cuda.Stream(device=dec.raw.device)
        t = 0
        while t < num_steps:
            b, kv_len = t // bucket, bucket_end(t, bucket, dec.length)
            stop = min((b + 1) * bucket, num_steps)
            graph = self.graphs.get(b)
            if graph is None:
                # the bucket's first step runs eagerly on a side stream (it doubles as the warm-up)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    dec.step(None, kv_len, **kw)
                torch.cuda.current_stream().wait_stream(side)
                t += 1
                if t >= stop:
                    continue
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    dec.step(None, kv_len, **kw)  # recorded, not executed
                self.pool = graph.pool() if self.pool is None else self.pool
                self.graphs[b] = graph
            while t < stop:
                graph.replay()
                t += 1
        torch.cuda.current_stream().synchronize()
