"""Tempo-estimator accuracy (issue 20): does each estimator follow a known tempo change?

Two kinds of material:

1. Real recordings (a folder of .ogg/.wav/.flac with a licence .txt beside each, e.g. the audio of the public
   ``librosa/data`` repository). Non-music files are skipped by name (``--skip``). Up to ``--excerpts`` excerpts
   of ``--excerpt-s`` seconds per recording, converted to 32 kHz mono (MusicGen's rate), each changed by known
   ratios r: ``librosa.effects.time_stretch`` (tempo x r, pitch kept; ``--stretch``) and resampling (tape speed:
   tempo and pitch x r; ``--resample``). A case is a hit when the estimated change ``bpm(r) / bpm(1)`` is within
   4 % of r times 1, 2, 3, 1/2 or 1/3 (MIREX Accuracy2 of the ratio: octave-aware); a ``nan`` BPM is a miss.
2. The testbed synth (``steerlit.testbed.synth``, 4 s at 16 kHz, tempo uniform in 60-180 BPM): a clip is a hit
   when the BPM is within 4 % of its true tempo times 1, 2, 3, 1/2 or 1/3.

Estimators: librosa with its default prior (std_bpm 1.0) and with std_bpm 1.5, madmom (if the ``beat`` extra is
installed), Beat This! (with ``--beat-this-checkpoint``). Prints a markdown table (shares with 95 % Wilson
intervals) and writes it to ``--csv``; the per-case rows go to ``<csv stem>_cases.csv``.

``--calibrate`` instead prints each estimator's beat confidence on synthetic clips with a beat (clicks, testbed
synth) and without (noise, silence, DC, held chords, sines): the thresholds in ``steerlit.metrics.beat_trackers``.

    python benchmarks/tempo_accuracy.py /tmp/audio --csv tempo_accuracy.csv
    python benchmarks/tempo_accuracy.py --calibrate
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerlit.files import atomic_write_csv  # noqa: E402
from steerlit.metrics.beat_trackers import (  # noqa: E402
    LibrosaBeatTracker,
    madmom_available,
    make_beat_tracker,
)
from steerlit.metrics.settings import TempoSettings  # noqa: E402
from steerlit.metrics.tempo import tempo_accuracy1, tempo_accuracy2  # noqa: E402
from steerlit.testbed import synth  # noqa: E402

SR = 32_000
SKIP = ("198-209", "3436-172162", "5703-47212", "bird", "humpback", "pibble")
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac")


def trackers(beat_this_checkpoint: str | None) -> dict:
    out = {
        "librosa (std_bpm 1.0)": LibrosaBeatTracker(TempoSettings(std_bpm=1.0)),
        "librosa (std_bpm 1.5)": LibrosaBeatTracker(TempoSettings(std_bpm=1.5)),
    }
    if madmom_available():
        out["madmom"] = make_beat_tracker("madmom")
    else:
        print('madmom is not installed (pip install -e ".[beat]"): its rows are left out', file=sys.stderr)
    if beat_this_checkpoint:
        out["beat_this"] = make_beat_tracker("beat_this", beat_this_checkpoint=beat_this_checkpoint)
    return out


def licence_of(path: Path) -> str:
    """The licence lines of the recording's .txt (those naming Creative Commons or the public domain)."""
    txt = path.with_name(path.name.split(".")[0] + ".txt")
    if not txt.is_file():
        return "licence file missing"
    lines = [ln.strip() for ln in txt.read_text(errors="replace").splitlines() if ln.strip()]
    marks = ("cc ", "cc-", "creative commons", "creativecommons", "public domain")
    marked = [ln for ln in lines if any(m in ln.lower() for m in marks)]
    return " | ".join(marked or lines[:1] or ["?"])


def recordings(folder: Path, skip: tuple[str, ...], min_s: float) -> list[Path]:
    """Audio files in ``folder`` (one per stem: ``.hq`` preferred), not matching ``skip``, at least ``min_s`` long."""
    import soundfile as sf

    by_stem: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in AUDIO_SUFFIXES or p.is_symlink() or any(s in p.name for s in skip):
            continue
        stem = p.name.split(".")[0]
        if stem not in by_stem or ".hq." in p.name:
            by_stem[stem] = p
    return [p for p in by_stem.values() if sf.info(str(p)).duration >= min_s]


def excerpts(path: Path, count: int, length_s: float) -> list[tuple[float, np.ndarray]]:
    """Up to ``count`` evenly spread, non-overlapping excerpts (start s, 32 kHz mono float32 audio)."""
    import librosa
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = audio.mean(axis=1)
    duration = y.size / sr
    n = max(1, min(count, int(duration // length_s)))
    starts = [(k + 1) * (duration - n * length_s) / (n + 1) + k * length_s for k in range(n)]
    out = []
    for s in starts:
        clip = y[int(s * sr) : int(s * sr) + int(length_s * sr)]
        out.append((round(s, 1), librosa.resample(clip, orig_sr=sr, target_sr=SR).astype(np.float32)))
    return out


def changed(y: np.ndarray, method: str, ratio: float) -> np.ndarray:
    """``y`` with its tempo multiplied by ``ratio``: phase-vocoder stretch or resampling (pitch moves too)."""
    import librosa

    if method == "stretch":
        return librosa.effects.time_stretch(y, rate=ratio).astype(np.float32)
    return librosa.resample(y, orig_sr=int(round(SR * ratio)), target_sr=SR).astype(np.float32)


def measure(tracker, y: np.ndarray, sr: int, timing: dict, name: str):
    t0 = time.perf_counter()
    est = tracker(y, sr)
    timing.setdefault(name, []).append(time.perf_counter() - t0)
    return est


def real_cases(files: list[Path], est: dict, args, timing: dict) -> list[dict]:
    rows: list[dict] = []
    changes = [("stretch", r) for r in args.stretch] + [("resample", r) for r in args.resample]
    for path in files:
        print(f"{path.name}: {licence_of(path)}", flush=True)
        for start, y in excerpts(path, args.excerpts, args.excerpt_s):
            refs = {name: measure(t, y, SR, timing, name) for name, t in est.items()}
            for method, ratio in changes:
                z = changed(y, method, ratio)
                for name, tracker in est.items():
                    e, ref = measure(tracker, z, SR, timing, name), refs[name]
                    rows.append(real_row(path.name, start, method, ratio, name, ref, e))
        done = [r for r in rows if r["recording"] == path.name]
        for name in est:
            hits = [r["hit"] for r in done if r["estimator"] == name]
            print(f"  {name}: {sum(hits)}/{len(hits)} octave-aware hits", flush=True)
    return rows


def real_row(recording, start, method, ratio, name, ref, e) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        measured, raw = e.bpm / ref.bpm, e.raw_bpm / ref.raw_bpm
    folded = np.log2(measured) - np.floor(np.log2(measured) + 0.5) if np.isfinite(measured) else np.nan
    return {
        "source": "real",
        "recording": recording,
        "start_s": start,
        "method": method,
        "ratio": ratio,
        "estimator": name,
        "bpm_ref": round(ref.bpm, 2),
        "bpm": round(e.bpm, 2),
        "confidence_ref": round(ref.confidence, 3),
        "confidence": round(e.confidence, 3),
        "hit": bool(tempo_accuracy2(measured, ratio)),
        "hit_exact": bool(tempo_accuracy1(measured, ratio)),
        "hit_ungated": bool(tempo_accuracy2(raw, ratio)),
        "right_direction": bool(np.isfinite(folded) and np.sign(folded) == np.sign(np.log2(ratio))),
        "nan": bool(np.isnan(e.bpm) or np.isnan(ref.bpm)),
    }


def synth_cases(n: int, est: dict, timing: dict) -> list[dict]:
    rows = []
    for i in range(n):
        spec = synth.spec_for_index(i, base_seed=20)
        y = synth.render(spec)
        for name, tracker in est.items():
            e = measure(tracker, y, synth.SAMPLE_RATE, timing, name)
            rows.append(
                {
                    "source": "synth",
                    "recording": f"{spec.instrument}/{spec.pattern}",
                    "ratio": spec.bpm,
                    "estimator": name,
                    "bpm": round(e.bpm, 2),
                    "confidence": round(e.confidence, 3),
                    "hit": bool(tempo_accuracy2(e.bpm, spec.bpm)),
                    "hit_exact": bool(tempo_accuracy1(e.bpm, spec.bpm)),
                    "hit_ungated": bool(tempo_accuracy2(e.raw_bpm, spec.bpm)),
                    "nan": bool(np.isnan(e.bpm)),
                }
            )
    return rows


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def share(rows: list[dict], key: str) -> str:
    hits, n = sum(r[key] for r in rows), len(rows)
    if n == 0:
        return "-"
    lo, hi = wilson(hits, n)
    return f"{100 * hits / n:.0f} % [{max(0.0, 100 * lo):.0f}, {min(100.0, 100 * hi):.0f}]"


def summary(rows: list[dict], timing: dict) -> list[dict]:
    table = []
    for name in dict.fromkeys(r["estimator"] for r in rows):
        real = [r for r in rows if r["estimator"] == name and r["source"] == "real"]
        syn = [r for r in rows if r["estimator"] == name and r["source"] == "synth"]
        table.append(
            {
                "estimator": name,
                "real n": len(real),
                "real octave-aware": share(real, "hit"),
                "stretch": share([r for r in real if r["method"] == "stretch"], "hit"),
                "resample": share([r for r in real if r["method"] == "resample"], "hit"),
                "real exact": share(real, "hit_exact"),
                "right direction": share(real, "right_direction"),
                "real no gate": share(real, "hit_ungated"),
                "real nan": share(real, "nan"),
                "synth n": len(syn),
                "synth octave-aware": share(syn, "hit"),
                "synth exact": share(syn, "hit_exact"),
                "synth nan": share(syn, "nan"),
                "s / clip": f"{np.median(timing.get(name, [np.nan])):.2f}",
            }
        )
    return table


def markdown(table: list[dict]) -> str:
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    return "\n".join(lines)


def _tone_chord(
    freqs: tuple[float, ...], n: int, rng: np.random.Generator, decay_s: float | None
) -> np.ndarray:
    t = np.arange(n) / SR
    y = sum(np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi)) / h for f in freqs for h in range(1, 8))
    env = np.minimum(1.0, t / 0.05) * (np.exp(-t / decay_s) if decay_s else 1.0)
    return y * env


def calibration_clips(seconds: float = 8.0) -> list[tuple[str, bool, np.ndarray, int]]:
    """(name, has_beat, audio, sr): clicks, testbed synth clips (beats); noise, DC, held chords, sines (none)."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    clips = []
    for bpm in range(60, 181, 20):
        y = np.zeros(n)
        for k in range(int(seconds * bpm / 60) + 1):
            s = int(k * 60 / bpm * SR)
            burst = rng.standard_normal(int(0.03 * SR)) * np.exp(-np.arange(int(0.03 * SR)) / (0.005 * SR))
            y[s : s + burst.size] += burst[: max(0, n - s)]
        clips.append((f"clicks {bpm}", True, 0.5 * y / np.abs(y).max(), SR))
    for i in range(24):
        spec = synth.spec_for_index(i, base_seed=21)
        clips.append(
            (f"synth {spec.bpm:.0f} {spec.instrument}/{spec.pattern}", True, synth.render(spec), 16_000)
        )
    white = rng.standard_normal(n)
    pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.arange(n // 2 + 1) + 1.0), n)
    brown = np.cumsum(rng.standard_normal(n))
    for name, y in (("white", white), ("pink", pink), ("brown", brown - brown.mean())):
        for level in (0.3, 0.003):
            clips.append((f"{name} noise x{level}", False, level * y / np.abs(y).max(), SR))
    clips.append(("DC 0.3", False, np.full(n, 0.3), SR))
    clips.append(("silence", False, np.zeros(n), SR))
    for freqs in ((220.0, 277.18, 329.63), (130.81, 164.81, 196.0, 246.94), (98.0, 146.83, 196.0)):
        held = _tone_chord(freqs, n, rng, None)
        clips.append((f"held chord {freqs[0]:.0f}", False, 0.3 * held / np.abs(held).max(), SR))
        struck = _tone_chord(freqs, n, rng, 2.5)
        clips.append((f"struck chord {freqs[0]:.0f}", False, 0.3 * struck / np.abs(struck).max(), SR))
    held = 0.3 * held / np.abs(held).max() + 0.03 * white / np.abs(white).max()
    clips.append(("held chord + noise", False, held, SR))
    t = np.arange(n) / SR
    clips.append(("sine 440", False, 0.5 * np.sin(2 * np.pi * 440 * t), SR))
    clips.append(
        (
            "sine sweep 100-2000",
            False,
            0.5 * np.sin(2 * np.pi * 100 * (20 ** (t / seconds)) * seconds / np.log(20)),
            SR,
        )
    )
    return [(name, beat, np.asarray(y, np.float32), sr) for name, beat, y, sr in clips]


def calibrate(est: dict, real: list[tuple[str, np.ndarray]]) -> None:
    """Confidences on synthetic beat / no-beat clips, and on unchanged real excerpts (if a folder is given)."""
    clips = calibration_clips()
    for name, tracker in est.items():
        conf = [(c, beat, tracker(y, sr).confidence) for c, beat, y, sr in clips]
        beats = sorted((v, c) for c, b, v in conf if b)
        none = sorted(((v, c) for c, b, v in conf if not b), reverse=True)
        print(f"\n{name}: threshold {getattr(tracker, 'min_confidence', '?')}")
        print(f"  beat clips (n={len(beats)}), lowest: " + ", ".join(f"{c} {v:.3f}" for v, c in beats[:4]))
        print(f"  no-beat clips (n={len(none)}), highest: " + ", ".join(f"{c} {v:.3f}" for v, c in none[:4]))
        print(f"  gap: [{none[0][0]:.3f}, {beats[0][0]:.3f}]")
        if real:
            music = sorted((tracker(y, SR).confidence, c) for c, y in real)
            print(
                f"  real excerpts (n={len(music)}), lowest: "
                + ", ".join(f"{c} {v:.3f}" for v, c in music[:5])
            )


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    names = [
        ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")
    ]
    cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("audio_dir", nargs="?", type=Path, help="folder of openly licensed recordings")
    p.add_argument("--csv", type=Path, default=Path("tempo_accuracy.csv"))
    p.add_argument("--excerpts", type=int, default=2, help="excerpts per recording")
    p.add_argument("--excerpt-s", type=float, default=15.0)
    p.add_argument("--stretch", type=float, nargs="*", default=[0.8, 1.25])
    p.add_argument("--resample", type=float, nargs="*", default=[0.9, 1.12])
    p.add_argument("--synth", type=int, default=40, help="testbed synth clips")
    p.add_argument("--skip", nargs="*", default=list(SKIP), help="file-name parts of non-music to skip")
    p.add_argument(
        "--beat-this-checkpoint", default=None, help="local Beat This! checkpoint (never downloaded)"
    )
    p.add_argument("--calibrate", action="store_true", help="print beat confidences on synthetic clips")
    args = p.parse_args(argv)
    est = trackers(args.beat_this_checkpoint)
    if args.calibrate:
        files = recordings(args.audio_dir, tuple(args.skip), args.excerpt_s) if args.audio_dir else []
        real = [
            (f"{p.name[:24]}@{s}", y) for p in files for s, y in excerpts(p, args.excerpts, args.excerpt_s)
        ]
        calibrate(est, real)
        return
    if args.audio_dir is None:
        p.error("give the audio folder (or --calibrate)")
    t0, timing = time.time(), {}
    files = recordings(args.audio_dir, tuple(args.skip), args.excerpt_s)
    rows = real_cases(files, est, args, timing) + synth_cases(args.synth, est, timing)
    table = summary(rows, timing)
    print(f"\n{time.strftime('%Y-%m-%d')}, {hardware()}, {len(files)} recordings, {time.time() - t0:.0f} s\n")
    print(markdown(table))
    atomic_write_csv(args.csv, table)
    atomic_write_csv(
        args.csv.with_name(args.csv.stem + "_cases.csv"),
        rows,
        list(dict.fromkeys(k for r in rows for k in r)),
    )
    print(f"\nwrote {args.csv} and its _cases.csv", file=sys.stderr)


if __name__ == "__main__":
    main()
