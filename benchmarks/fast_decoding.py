"""Fast decoding: HF ``generate`` (eager, sdpa) vs the fast decode loop, steps/s and audio-s per wall-s.

Random-weight models of musicgen-small / -medium shape (built in memory, no download) in fp16 on
CUDA; on CPU a reduced run (tiny model, fp32). All paths use the same prompts, per-row seeds (top-k
sampling), CFG 3 and steps; EnCodec decoding is excluded everywhere (stubbed during timing; its
time is measured once per batch and reported apart). Each path gets one warm-up call, then
``--repeats`` timed calls (median). The warm-up call has the same shapes, so timed fast calls reuse
its cached buffers and CUDA graphs (a first call also pays the captures). Ratios are relative to HF
sdpa in the same run. ``agree``: fraction of codes equal to HF eager's (unsteered paths) or to HF
sdpa + steering's (steered paths), same seeds.

    python benchmarks/fast_decoding.py                      # CUDA: small,medium × batch 1,8,64
    python benchmarks/fast_decoding.py --shapes tiny --batches 1,8,64 --steps 250   # CPU default
Prints one JSON object per (shape, batch, path) and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "tiny": dict(),
    "small": dict(
        hidden_size=1024, num_layers=24, num_heads=16, ffn_dim=4096, codebook_size=2048, text_d_model=768
    ),
    "medium": dict(
        hidden_size=1536, num_layers=48, num_heads=24, ffn_dim=6144, codebook_size=2048, text_d_model=768
    ),
}
PROMPTS = [
    "an upbeat electronic dance track with punchy drums",
    "a slow sad piano ballad",
    "lofi hip hop beat with vinyl crackle",
    "bright orchestral fanfare with brass",
]


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def make_adapter(shape: str, device: str, dtype: torch.dtype):
    """A random MusicGen of ``shape`` built directly on ``device`` (no files)."""
    from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor

    from steerlit.models.adapter import MusicGenAdapter
    from steerlit.models.tiny import tiny_musicgen_config
    from steerlit.models.tokenizer import build_t5_tokenizer

    tok = build_t5_tokenizer(vocab_size=256)
    config = tiny_musicgen_config(text_vocab_size=max(len(tok), 8), **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration._from_config(
            config, attn_implementation={"text_encoder": "sdpa", "decoder": "sdpa", "audio_encoder": None}
        )
    model.to(dtype).eval()
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = config.decoder.pad_token_id
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=config.audio_encoder.sampling_rate)
    return MusicGenAdapter(
        model=model, processor=MusicgenProcessor(feature_extractor=fe, tokenizer=tok), model_id=shape
    )


def set_decoder_attn(adapter, impl: str) -> None:
    dec = adapter.model.decoder
    try:
        dec.set_attn_implementation(impl)
    except (AttributeError, ValueError):
        dec.config._attn_implementation = impl
    assert dec.model.decoder.config._attn_implementation == impl


@contextlib.contextmanager
def no_codec(adapter):
    """Stub EnCodec decoding so that only the decode loop is timed."""
    enc = adapter.model.audio_encoder
    real = enc.decode

    class _Out:
        def __init__(self, b):
            self.audio_values = torch.zeros(b, 1, 1)

    enc.decode = lambda codes, audio_scales=None, **kw: _Out(codes.shape[1])
    try:
        yield
    finally:
        enc.decode = real


def steering_for(adapter, batch: int):
    """Per-row steering: a random direction at every resid_post site, α cycling 0.5/1/2 (one_to_all)."""
    from steerlit.intervene.steer import Intervention

    g = torch.Generator().manual_seed(1)
    v = torch.randn(adapter.hidden_size, generator=g)
    v = v / v.norm() * 4
    sites = {f"resid_post.{i}": v for i in range(adapter.num_layers)}
    return [[Intervention(sites, (0.5, 1.0, 2.0)[i % 3])] for i in range(batch)]


def paths(device: str, with_compile: bool):
    """(name, engine, hf attn impl, fast kwargs, steered)."""
    cuda = device.startswith("cuda")
    g, det = {"use_cuda_graphs": True}, {"deterministic": True}
    out = [("hf eager", "hf", "eager", {}, False), ("hf sdpa", "hf", "sdpa", {}, False)]
    out += [("hf sdpa + steering", "hf", "sdpa", {}, True)]
    out += [("fast, no graphs", "fast", "sdpa", {"use_cuda_graphs": False}, False)]
    out += [("fast, no graphs + steering", "fast", "sdpa", {"use_cuda_graphs": False}, True)]
    # the graph-shaped step run eagerly: on CUDA the deterministic one is the bit-exact reference
    # that "fast, graphs, deterministic" must equal (reported as graph_vs_eager_agree)
    out += [
        (
            "fast, bucketed step, no graphs",
            "fast",
            "sdpa",
            {"use_cuda_graphs": False, "bucketed": True},
            False,
        )
    ]
    if cuda:
        out += [
            (
                "fast, bucketed step, no graphs, deterministic",
                "fast",
                "sdpa",
                {"bucketed": True, **det},
                False,
            )
        ]
        out += [
            ("fast, graphs", "fast", "sdpa", g, False),
            ("fast, graphs + steering", "fast", "sdpa", g, True),
        ]
        out += [("fast, graphs, deterministic", "fast", "sdpa", {**g, **det}, False)]
    if with_compile:
        kw = {"use_cuda_graphs": cuda, "compile": True}
        out += [("fast + compile", "fast", "sdpa", kw, False)]
        out += [("fast + compile + steering", "fast", "sdpa", kw, True)]
    return out


def measure(adapter, shape, batch, steps, repeats, device, with_compile) -> list[dict]:
    from steerlit.engines.fast.state import clear_fast_cache
    from steerlit.engines.select import generate
    from steerlit.engines.settings import GenerationSettings

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    seeds = list(range(batch))
    steer = steering_for(adapter, batch)
    frames = steps - adapter.num_codebooks + 1
    audio_s = batch * frames / adapter.frame_rate
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows, refs, base, eager_det = [], {}, None, None
    for name, engine, impl, kw, steered in paths(device, with_compile):
        set_decoder_attn(adapter, impl)
        settings = GenerationSettings(guidance_scale=3.0, engine=engine)
        args = dict(max_new_tokens=steps, seeds=seeds, steering=steer if steered else None, **kw)

        def call(args=args, settings=settings):
            sync()
            t0 = time.perf_counter()
            with no_codec(adapter):
                out = generate(adapter, prompts, settings, **args)
            sync()
            return time.perf_counter() - t0, out

        first, _ = call()  # warm-up: compile, graph captures (cached for the timed calls)
        times, out = [], None
        for _ in range(repeats):
            dt, out = call()
            times.append(dt)
        wall = statistics.median(times)
        if engine == "hf":
            refs.setdefault(steered, out.codes)  # HF eager (unsteered), HF sdpa + steering
        ref = refs.get(steered)
        if name == "hf sdpa":
            base = wall
        if name == "fast, bucketed step, no graphs, deterministic":
            eager_det = out.codes
        graph_check = None
        if name == "fast, graphs, deterministic" and eager_det is not None:
            graph_check = round((out.codes == eager_det).float().mean().item(), 4)
        row = {
            "benchmark": "fast_decoding",
            "shape": shape,
            "batch": batch,
            "path": name,
            "steps": steps,
            "device": hardware(device),
            "dtype": str(adapter.dtype).replace("torch.", ""),
            "torch": torch.__version__,
            "wall_s": round(wall, 4),
            "steps_per_s": round(steps / wall, 2),
            "audio_s_per_s": round(audio_s / wall, 3),
            "speedup_vs_hf_sdpa": round(base / wall, 3) if base else None,
            "best_steps_per_s": round(steps / min(times), 2),  # less sensitive to a busy machine
            "first_call_s": round(first, 4),
            "agree": round((out.codes == ref).float().mean().item(), 4) if ref is not None else None,
            "graph_vs_eager_agree": graph_check,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    set_decoder_attn(adapter, "sdpa")
    clear_fast_cache()  # free the last cached decoder (KV cache, graphs) before the next batch
    # EnCodec decoding of the whole batch, once
    codes = out.codes.to(adapter.device)
    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        adapter.model.audio_encoder.decode(codes[None], [None] * batch)
        sync()
    print(
        json.dumps({"shape": shape, "batch": batch, "encodec_decode_s": round(time.perf_counter() - t0, 4)})
    )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| shape | path | " + " | ".join(f"batch {b}" for b in sorted({r["batch"] for r in rows})) + " |"
    ]
    lines.append("|" + "---|" * (len(lines[0].split("|")) - 2))
    batches = sorted({r["batch"] for r in rows})
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for path in dict.fromkeys(r["path"] for r in rows if r["shape"] == shape):
            cells = []
            for b in batches:
                r = next(
                    (r for r in rows if r["shape"] == shape and r["path"] == path and r["batch"] == b), None
                )
                cells.append(
                    ""
                    if r is None
                    else f"{r['steps_per_s']} ({r['audio_s_per_s']}; ×{r['speedup_vs_hf_sdpa']})"
                )
            lines.append(f"| {shape} | {path} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,medium" if cuda else "tiny")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--dtype", default="float16" if cuda else "float32")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=cuda)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    for shape in args.shapes.split(","):
        adapter = make_adapter(shape, args.device, dtype)
        for batch in (int(b) for b in args.batches.split(",")):
            rows += measure(adapter, shape, batch, args.steps, args.repeats, args.device, args.compile)
        del adapter
        if cuda:
            torch.cuda.empty_cache()
    print("\nsteps/s (audio-s per wall-s; speed-up vs HF sdpa)\n" + table(rows))
    return rows


if __name__ == "__main__":
    main()
