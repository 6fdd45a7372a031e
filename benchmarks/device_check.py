"""GPU readiness in one table (issue 19, deliverable 7): run it on a CUDA machine, in under 8 minutes.

Sections, each with its own time budget; a failing section is reported in the table and never hides the others:

1. **fast engine** (issue 7's acceptance, as far as the engine supports it) on a random model with the exact
   musicgen-small configuration in fp16: CUDA-graph replay equals the same bucketed step run eagerly
   (deterministic attention; fresh capture and reuse); agreement of codes with HF eager, same per-row seeds,
   for the fast engine and for HF sdpa (the target: fast >= sdpa); steps/s at batch 1/8/64 for HF sdpa and the
   fast engine (targets on an H100: >= 500 at batch 1, >= 280 at batch 64, >= 8x / >= 5x HF sdpa) and the
   steering overhead inside the graphs (steered vs unsteered, target <= 2 %). EnCodec decoding is excluded.
2. **hooks**: HF generate with a one_to_all steering (one hook on every decoder layer) vs plain (target <= 3 %).
3. **CLI**: a random musicgen-small checkpoint (the public configuration) is built into a temporary HF hub cache
   and ``steerlit run`` (``benchmarks/rehearsal.py``'s command line, reduced length) runs in a subprocess on one
   GPU and, with ``torch.cuda.device_count() >= 2``, on two (``trainer=ddp_gpus``; one run folder expected).

    python benchmarks/device_check.py                    # CUDA, ~5-7 min on an H100
    python benchmarks/device_check.py --device cpu --quick   # the same code on a tiny model (CPU; CI-free check)

Without a CUDA device and without ``--device cpu``, it prints why it stops and exits 0 (nothing to check there).

Only public entry points are used (:func:`api`); if one moved, the section says which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rehearsal import child_env, cli_command, run_cli  # noqa: E402

PROMPTS = [
    "an upbeat electronic dance track with punchy drums",
    "a slow sad piano ballad",
    "lofi hip hop beat with vinyl crackle",
    "bright orchestral fanfare with brass",
]
REQUEST_FIELDS = (  # generate_with's keywords that are DecodeRequest fields (the rest are engine options)
    "max_new_tokens",
    "guidance_scale",
    "temperature",
    "top_k",
    "seeds",
    "steering",
    "decode_audio",
)
NO_CUDA = (
    "device_check: no CUDA device here (torch.cuda.is_available() is False), so there is nothing to check: "
    "run it on a GPU machine. `--device cpu --quick` runs the same code on a tiny model on the CPU."
)
TARGETS = {  # issue 7 (H100); informational elsewhere
    1: (500.0, 8.0),
    64: (280.0, 5.0),
}


@dataclass
class Row:
    section: str
    check: str
    result: str
    target: str = ""
    status: str = "INFO"  # PASS | FAIL | INFO | SKIP | ERROR
    seconds: float = 0.0


class Report:
    def __init__(self):
        self.rows: list[Row] = []

    def add(self, section, check, result, target="", status="INFO", seconds=0.0) -> None:
        row = Row(section, check, str(result), target, status, round(seconds, 1))
        self.rows.append(row)
        print(f"[device_check] {section} | {check} | {result} | {status}", file=sys.stderr, flush=True)

    def table(self) -> str:
        lines = ["| section | check | result | target | status | s |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {r.section} | {r.check} | {r.result} | {r.target} | {r.status} | {r.seconds} |"
            for r in self.rows
        ]
        return "\n".join(lines)


class Budget:
    """A soft deadline: measurements check it between calls (a CUDA call is never interrupted)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"section time budget spent before {what}")


def api() -> SimpleNamespace:
    """The steerlit entry points this script uses; a clear error if one moved."""
    try:
        from steerlit.engines.select import generate_with
        from steerlit.intervene.steer import Intervention
        from steerlit.models.adapter import MusicGenAdapter
        from steerlit.models.musicgen_shapes import (
            build_random_checkpoint,
            checkpoint_bytes,
            musicgen_config,
            offline_processor,
            random_model,
        )
        from steerlit.models.tiny import tiny_musicgen_config
    except ImportError as err:
        raise RuntimeError(
            f"a steerlit entry point moved ({err}); update api() in benchmarks/device_check.py"
        ) from err
    try:
        from steerlit.engines.base import DecodeRequest
        from steerlit.engines.select import engine_named

        def fast_fallback_reason(adapter, prompts, kwargs):
            """Why the fast engine would hand this call to HF (None: it runs it)."""
            fields = {k: v for k, v in kwargs.items() if k in REQUEST_FIELDS}
            options = {k: v for k, v in kwargs.items() if k not in REQUEST_FIELDS}
            request = DecodeRequest(prompts=tuple(prompts), **fields, options=options)
            return engine_named("fast").unsupported_reason(adapter, request)
    except ImportError:
        fast_fallback_reason = None
    try:
        from steerlit.engines.fast.state import clear_fast_cache
    except ImportError:
        clear_fast_cache = None
    return SimpleNamespace(
        generate_with=generate_with,
        Intervention=Intervention,
        MusicGenAdapter=MusicGenAdapter,
        musicgen_config=musicgen_config,
        offline_processor=offline_processor,
        random_model=random_model,
        build_random_checkpoint=build_random_checkpoint,
        checkpoint_bytes=checkpoint_bytes,
        tiny_musicgen_config=tiny_musicgen_config,
        fast_fallback_reason=fast_fallback_reason,
        clear_fast_cache=clear_fast_cache or (lambda: None),
    )


def set_decoder_attn(adapter, impl: str) -> None:
    dec = adapter.model.decoder
    try:
        dec.set_attn_implementation(impl)
    except (AttributeError, ValueError):
        dec.config._attn_implementation = impl
    if dec.model.decoder.config._attn_implementation != impl:
        raise RuntimeError(f"could not switch the decoder to {impl!r} attention")


def build_adapter(ns, shape: str, device: str, dtype: torch.dtype):
    """A random model of ``shape`` (``small`` = the public musicgen-small configuration, ``tiny``) on ``device``."""
    config = ns.musicgen_config("small") if shape == "small" else ns.tiny_musicgen_config(codebook_size=2048)
    with torch.device(device):
        model = ns.random_model(config, seed=0, dtype=dtype)
    adapter = ns.MusicGenAdapter(model=model, processor=ns.offline_processor(), model_id=f"random-{shape}")
    set_decoder_attn(adapter, "sdpa")
    return adapter


@contextlib.contextmanager
def no_codec(adapter):
    """Stub EnCodec decoding inside HF generate so that only decoding steps are timed."""
    enc = adapter.model.audio_encoder
    real = enc.decode

    def fake(codes, audio_scales=None, **kw):
        return SimpleNamespace(audio_values=torch.zeros(codes.shape[1], 1, 1, device=codes.device))

    enc.decode = fake
    try:
        yield
    finally:
        enc.decode = real


def all_layer_steering(ns, adapter, batch: int):
    """Per-row steering: one random direction (norm 4) at every resid_post site, α cycling 0.5 / 1 / 2."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(adapter.hidden_size, generator=g)
    sites = {f"resid_post.{i}": v / v.norm() * 4 for i in range(adapter.num_layers)}
    return [[ns.Intervention(sites, (0.5, 1.0, 2.0)[i % 3])] for i in range(batch)]


def call(ns, adapter, engine, batch, steps, *, steering=None, **fast):
    """One timed generate (synchronised); returns (seconds, output)."""
    kwargs = dict(
        max_new_tokens=steps, guidance_scale=3.0, seeds=list(range(batch)), temperature=1.0, top_k=250
    )
    kwargs.update(steering=steering, decode_audio=False, **fast)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    if engine == "fast" and ns.fast_fallback_reason is not None:
        reason = ns.fast_fallback_reason(adapter, prompts, kwargs)
        if reason:
            raise RuntimeError(f"the fast engine would fall back to HF: {reason}")
    sync = torch.cuda.synchronize if adapter.device.type == "cuda" else (lambda: None)
    with no_codec(adapter):
        sync()
        t0 = time.perf_counter()
        out = ns.generate_with(engine, adapter, prompts, **kwargs)
        sync()
    return time.perf_counter() - t0, out


def share_equal(a, b) -> float:
    return float((a.codes == b.codes).float().mean())


def cuda_target(adapter, value: float, target: float) -> str:
    """PASS/FAIL against a target on CUDA; INFO elsewhere (the targets are H100 figures)."""
    if adapter.device.type != "cuda":
        return "INFO"
    return "PASS" if value >= target else "FAIL"


def section_graphs(ns, report: Report, adapter, args, budget: Budget) -> None:
    if adapter.device.type != "cuda":
        report.add(
            "fast engine", "CUDA-graph capture and replay", "skipped: needs a CUDA device", status="SKIP"
        )
        return
    t0, steer = time.perf_counter(), all_layer_steering(ns, adapter, 8)
    ns.clear_fast_cache()
    det = {"steering": steer, "deterministic": True}
    _, eager = call(ns, adapter, "fast", 8, args.steps, use_cuda_graphs=False, bucketed=True, **det)
    budget.check("graph capture")
    _, fresh = call(ns, adapter, "fast", 8, args.steps, use_cuda_graphs=True, **det)
    _, reused = call(ns, adapter, "fast", 8, args.steps, use_cuda_graphs=True, **det)
    same = torch.equal(fresh.sequences, eager.sequences) and torch.equal(reused.sequences, eager.sequences)
    result = (
        "identical" if same else f"differ: {share_equal(fresh, eager):.4f} / {share_equal(reused, eager):.4f}"
    )
    check = "graph replay == eager bucketed step (deterministic, steered, batch 8; fresh + reused graphs)"
    report.add(
        "fast engine", check, result, "identical", "PASS" if same else "FAIL", time.perf_counter() - t0
    )
    ns.clear_fast_cache()


def section_agreement(ns, report: Report, adapter, args, budget: Budget) -> None:
    t0, dtype = time.perf_counter(), str(adapter.dtype).replace("torch.", "")
    set_decoder_attn(adapter, "eager")
    _, eager = call(ns, adapter, "hf", 8, args.steps)
    set_decoder_attn(adapter, "sdpa")
    budget.check("the sdpa and fast runs")
    _, sdpa = call(ns, adapter, "hf", 8, args.steps)
    _, fast = call(ns, adapter, "fast", 8, args.steps)
    a_sdpa, a_fast = share_equal(sdpa, eager), share_equal(fast, eager)
    check = f"codes equal to HF eager ({dtype}, batch 8, same seeds)"
    report.add("fast engine", check + ": HF sdpa", f"{a_sdpa:.4f}", "(reference)", "INFO")
    status = "PASS" if a_fast >= a_sdpa else "FAIL"
    report.add(
        "fast engine",
        check + ": fast engine",
        f"{a_fast:.4f}",
        ">= HF sdpa's",
        status,
        time.perf_counter() - t0,
    )
    ns.clear_fast_cache()


def median_time(ns, adapter, engine, batch, steps, repeats, **kw) -> float:
    call(ns, adapter, engine, batch, steps if engine == "fast" else min(steps, 16), **kw)  # warm-up (graphs)
    return statistics.median(call(ns, adapter, engine, batch, steps, **kw)[0] for _ in range(repeats))


def section_throughput(ns, report: Report, adapter, args, budget: Budget) -> None:
    frames = args.steps - adapter.num_codebooks + 1
    for batch in args.batches:
        budget.check(f"batch {batch}")
        t0 = time.perf_counter()
        hf = args.steps / median_time(ns, adapter, "hf", batch, args.steps, 1)
        fast = args.steps / median_time(ns, adapter, "fast", batch, args.steps, args.repeats)
        steer = all_layer_steering(ns, adapter, batch)
        steered = args.steps / median_time(
            ns, adapter, "fast", batch, args.steps, args.repeats, steering=steer
        )
        audio = batch * frames / adapter.frame_rate / args.steps  # audio-seconds per step
        report.add(
            "fast engine", f"steps/s, batch {batch}: HF sdpa", f"{hf:.0f} ({hf * audio:.1f} audio-s/s)"
        )
        target, ratio = TARGETS.get(batch, (None, None))
        status = cuda_target(adapter, min(fast / target, fast / hf / ratio), 1.0) if target else "INFO"
        report.add(
            "fast engine",
            f"steps/s, batch {batch}: fast engine",
            f"{fast:.0f} (x{fast / hf:.1f} HF sdpa; {fast * audio:.1f} audio-s/s)",
            f">= {target:.0f} and >= {ratio:.0f}x (H100)" if target else "",
            status,
        )
        overhead = fast / steered - 1
        status = ("PASS" if overhead <= 0.02 else "FAIL") if adapter.device.type == "cuda" else "INFO"
        check = f"steering overhead, batch {batch}: fast, all {adapter.num_layers} layers"
        report.add(
            "fast engine", check, f"{100 * overhead:+.1f} %", "<= 2 %", status, time.perf_counter() - t0
        )
        ns.clear_fast_cache()


def section_hooks(ns, report: Report, adapter, args, budget: Budget) -> None:
    t0 = time.perf_counter()
    set_decoder_attn(adapter, "sdpa")
    steer = all_layer_steering(ns, adapter, 1)
    call(ns, adapter, "hf", 1, min(args.steps, 16), steering=steer)  # warm-up
    plain, steered = [], []
    for _ in range(args.repeats):
        budget.check("the next repeat")
        plain.append(call(ns, adapter, "hf", 1, args.steps)[0])
        steered.append(call(ns, adapter, "hf", 1, args.steps, steering=steer)[0])
    p, s = statistics.median(plain), statistics.median(steered)
    status = ("PASS" if s / p - 1 <= 0.03 else "FAIL") if adapter.device.type == "cuda" else "INFO"
    check = f"HF generate, one_to_all hooks on all {adapter.num_layers} layers vs plain (batch 1, {args.repeats}x)"
    result = f"{100 * (s / p - 1):+.1f} % ({p:.2f} s vs {s:.2f} s for {args.steps} steps)"
    report.add("hooks", check, result, "<= 3 %", status, time.perf_counter() - t0)


def cli_runs(report: Report, args, budget: Budget, hub: Path, num_layers: int, tmp: Path) -> None:
    cuda = args.device == "cuda"
    count = torch.cuda.device_count() if cuda else 0
    plan = [(1, "1 GPU" if cuda else "1 CPU process")] + ([(2, "2 GPUs")] if count >= 2 else [])
    env = child_env(numba_cache=tmp / "numba")  # the 1-process run warms librosa's numba cache for DDP ranks
    for devices, label in plan:
        out = tmp / f"runs-{devices}"
        cmd = cli_command(hub, num_layers=num_layers, device=args.device, devices=devices, output_dir=out)
        run = run_cli(cmd, env, timeout=max(30.0, budget.left()), gpu=cuda, echo=args.verbose)
        folders = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.exists() else []
        grid = sum(s.seconds for s in run.stages if "grid" in s.name)
        ok = run.returncode == 0 and len(folders) == 1
        result = (
            f"exit {run.returncode} in {run.wall_s:.0f} s; {len(folders)} run folder(s); grid {grid:.0f} s"
        )
        result += f"; peak RSS {max((s.peak_rss_mb for s in run.stages), default=0):,.0f} MB"
        if not ok:
            result += "; last lines: " + " / ".join(line.strip()[:160] for line in run.tail[-3:])
        check = f"steerlit run, {label}, reduced rehearsal grid"
        report.add("CLI", check, result, "exit 0, one run folder", "PASS" if ok else "FAIL", run.wall_s)
    if count < 2:
        why = "needs >= 2 CUDA devices" + (f" (found {count})" if cuda else " (CPU run)")
        report.add("CLI", "steerlit run, 2 GPUs (trainer=ddp_gpus)", f"skipped: {why}", status="SKIP")


def section_cli(ns, report: Report, args, budget: Budget) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="steerlit-device-check-"))
    hub = args.hub_cache or tmp / "hub"
    config = ns.tiny_musicgen_config(codebook_size=2048) if args.quick else None
    t0 = time.perf_counter()
    snapshot = ns.build_random_checkpoint("small", hub, config=config, device=args.device)
    what = (
        "tiny config under the musicgen-small id (--quick)" if args.quick else "public musicgen-small config"
    )
    size = f"{ns.checkpoint_bytes(snapshot) / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s ({what})"
    report.add("CLI", "random checkpoint in a temporary HF hub cache", size, seconds=time.perf_counter() - t0)
    try:
        cli_runs(report, args, budget, hub, 4 if args.quick else 24, tmp)
    finally:
        if args.keep:
            print(f"[device_check] kept {tmp} (checkpoint, run folders)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # ~1.2 GB of checkpoint


SECTIONS = (  # name, function, budget seconds on CUDA (the CPU --quick run takes far less)
    ("fast engine", section_graphs, 40),
    ("fast engine", section_agreement, 40),
    ("fast engine", section_throughput, 130),
    ("hooks", section_hooks, 50),
)


def run_section(report: Report, name: str, fn, budget_s: float, *fn_args) -> None:
    """Run one section; a failure or a spent budget becomes a row, never an exception."""
    t0 = time.perf_counter()
    try:
        fn(*fn_args, Budget(budget_s))
    except TimeoutError as err:
        report.add(name, fn.__name__.removeprefix("section_"), f"stopped: {err}", status="SKIP")
    except Exception as err:  # a section must not hide the others
        where = traceback.extract_tb(err.__traceback__)[-1]
        detail = f"{type(err).__name__}: {str(err)[:200]} (at {Path(where.filename).name}:{where.lineno})"
        report.add(
            name,
            fn.__name__.removeprefix("section_"),
            detail,
            status="ERROR",
            seconds=time.perf_counter() - t0,
        )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def header(args) -> str:
    cuda = args.device == "cuda"
    card = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or platform.machine()} CPU"
    try:
        import transformers

        tf = transformers.__version__
    except ImportError:
        tf = "missing"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout
    except OSError:
        rev = ""
    count = torch.cuda.device_count() if cuda else 0
    return (
        f"device_check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {card}"
        + (f" x {count}" if cuda else "")
        + f"; torch {torch.__version__}, transformers {tf}; steerlit {rev.strip() or '?'}; "
        + f"shape {'tiny (--quick)' if args.quick else 'musicgen-small'}, {args.steps} steps, guidance 3, top-k 250"
    )


def parse_args(argv):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device", choices=["cuda", "cpu"], help="default: cuda (without one: a message, exit 0)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny shapes and few steps (a CPU run of the same code)"
    )
    ap.add_argument("--steps", type=int, help="decoding steps per call (default 250; 20 with --quick)")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--repeats", type=int, help="timed calls per measurement (default 2; 2 with --quick)")
    ap.add_argument("--skip-cli", action="store_true", help="skip the steerlit run section")
    ap.add_argument(
        "--cli-budget", type=float, default=300.0, help="at most this many seconds for the CLI section"
    )
    ap.add_argument(
        "--total-budget", type=float, default=470.0, help="the CLI section ends by then (seconds)"
    )
    ap.add_argument("--hub-cache", type=Path, help="reuse this HF hub cache for the CLI checkpoint")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--verbose", action="store_true", help="echo the CLI's output")
    ap.add_argument("--keep", action="store_true", help="keep the temporary checkpoint and run folders")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not cuda:
        ap.error("--device cuda but torch.cuda.is_available() is False; use --device cpu --quick")
    args.device = args.device or ("cuda" if cuda else None)
    args.steps = args.steps or (20 if args.quick else 250)
    args.repeats = args.repeats or 2
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device is None:
        print(NO_CUDA)
        return 0
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    report, t0 = Report(), time.perf_counter()
    try:
        ns = api()
    except RuntimeError as err:
        report.add("setup", "steerlit entry points", str(err), status="ERROR")
        ns = None
    adapter = None
    if ns is not None:
        shape, dtype = ("tiny", torch.float32) if args.quick else ("small", torch.float16)
        if args.device == "cpu" and not args.quick:
            dtype = torch.float32
        try:
            t1 = time.perf_counter()
            adapter = build_adapter(ns, shape, args.device, dtype)
            what = f"random {shape}, {adapter.num_layers} x {adapter.hidden_size}, {dtype}".replace(
                "torch.", ""
            )
            report.add("setup", "model", what, seconds=time.perf_counter() - t1)
        except Exception as err:
            report.add("setup", "model", f"{type(err).__name__}: {str(err)[:200]}", status="ERROR")
    for name, fn, budget_s in SECTIONS:
        if adapter is None:
            report.add(name, fn.__name__.removeprefix("section_"), "skipped: no model", status="SKIP")
            continue
        run_section(report, name, fn, budget_s, ns, report, adapter, args)
    del adapter
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the CLI's processes need the GPU memory
    if ns is not None and not args.skip_cli:
        left = args.total_budget - (time.perf_counter() - t0)
        run_section(report, "CLI", section_cli, max(60.0, min(args.cli_budget, left)), ns, report, args)
    report.add(
        "total", "wall time", f"{time.perf_counter() - t0:.0f} s", "< 480 s", seconds=time.perf_counter() - t0
    )
    print(header(args))
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in report.rows], indent=1))
    return 0 if not any(r.status in ("FAIL", "ERROR") for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
