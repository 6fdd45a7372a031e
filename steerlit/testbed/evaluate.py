"""Evaluate the testbed model: codec round trip, unsteered prompt following, generation speed.

    python -m steerlit.testbed.evaluate --model checkpoints/testbed [--out eval.json]

Prints (and optionally writes as JSON):

* codec round trip on held-out clips (seed stream ``--heldout-seed``): share of clips whose
  estimated tempo after encode/decode is within 4% of the estimate on the original, and whose
  spectral centroid is within 10% (targets: >= 90% each), the level change per octave band (where
  the codec loses energy), the same for each clip's drums alone and pitched part alone
  (``stem_round_trip``: do the codes carry the pitched part?), and how much of a steady vs a plucked
  sine it keeps (``tone_round_trip``);
* prompt following without steering, on the testbed probe prompts: fast vs slow prompts ->
  median BPM per pole, octave-aware accuracy (any of bpm, bpm/2, 2*bpm in the pole's caption
  range) and the AUROC of fast > slow; bright vs dark -> centroid AUROC; all pooled over the
  sampling seeds ``--seeds``. The same numbers on real synthetic clips of each pole are given as
  the estimator's ceiling;
* CPU seconds to generate 5 s of audio for one prompt (with CFG);
* with ``--study RUN``: the steering acceptance of a finished ``steerlit run experiment=testbed_study``
  folder (:mod:`steerlit.testbed.steering_report`); ``--study RUN --only-study`` prints just that.

BPM and centroid come from ``steerlit.metrics.attributes.compute_attribute``, as in the steering grid.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from steerlit.files import atomic_write_text
from steerlit.metrics.attributes import compute_attribute
from steerlit.testbed.captions import BRIGHT_MIN, DARK_MAX, FAST_BPM, SLOW_BPM, probe_sets
from steerlit.testbed.codec import round_trip
from steerlit.testbed.steering_report import format_report, studies_report
from steerlit.testbed.synth import (
    BPM_RANGE,
    SAMPLE_RATE,
    TEMPO_ESTIMATOR,
    ClipSpec,
    render,
    render_stems,
    spec_for_index,
)

POLE_RANGES = {"fast": (FAST_BPM, BPM_RANGE[1]), "slow": (BPM_RANGE[0], SLOW_BPM)}


def attributes(y: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[float, float]:
    """(tempo in BPM, spectral centroid in Hz) of a mono clip ``(samples,)``."""
    return compute_attribute(y, sr, "bpm", tempo_kwargs=TEMPO_ESTIMATOR), compute_attribute(
        y, sr, "centroid_hz"
    )


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(random positive > random negative), ties count 1/2 (Mann-Whitney U / (n_pos * n_neg))."""
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def octave_aware_hit(bpm: float, pole: str) -> bool:
    """True if bpm, bpm/2 or 2*bpm falls in the pole's caption range."""
    lo, hi = POLE_RANGES[pole]
    return any(lo <= b <= hi for b in (bpm, bpm / 2, bpm * 2))


def plain_hit(bpm: float, pole: str) -> bool:
    lo, hi = POLE_RANGES[pole]
    return lo <= bpm <= hi


def tempo_summary(bpm: dict[str, list[float]]) -> dict:
    """Pole medians (clips without a beat, bpm nan, left out), plain and octave-aware accuracy (nan: a miss),
    AUROC(fast > slow)."""
    out = {f"median_bpm_{p}": float(np.nanmedian(v)) for p, v in bpm.items()}
    out["accuracy_plain"] = float(np.mean([plain_hit(b, p) for p, v in bpm.items() for b in v]))
    out["accuracy_octave_aware"] = float(np.mean([octave_aware_hit(b, p) for p, v in bpm.items() for b in v]))
    out["auroc_fast_gt_slow"] = auroc(bpm["fast"], bpm["slow"])
    return out


BAND_EDGES_HZ = (0.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 8000.0)


def band_energies(y: np.ndarray, edges_hz: tuple[float, ...] = BAND_EDGES_HZ) -> np.ndarray:
    """Energy of a clip ``(samples,)`` per frequency band [edges[i], edges[i+1]): ``(len(edges) - 1,)``."""
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1.0 / SAMPLE_RATE)
    return np.array(
        [power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges_hz[:-1], edges_hz[1:])]
    )


def band_level_change_db(rec: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Level of ``rec`` relative to ``ref`` per band of :func:`band_energies`, in dB: ``(bands,)``."""
    return 10 * np.log10((band_energies(rec) + 1e-12) / (band_energies(ref) + 1e-12))


def _mean_per_band(change_db: list[np.ndarray]) -> list[float]:
    return [round(float(v), 2) for v in np.mean(change_db, axis=0)]


@torch.no_grad()
def codec_round_trip(encodec, n: int = 40, base_seed: int = 1) -> dict:
    """Encode/decode ``n`` held-out clips with the stock EnCodec; compare tempo and centroid, and the
    level change per octave band (dB, mean over clips): where in the spectrum the codec loses energy."""
    tempo_ok, cent_ok, rel_cent, band_db = [], [], [], []
    for i in range(n):
        y = render(spec_for_index(i, base_seed))
        rec = round_trip(encodec, y)
        (b0, c0), (b1, c1) = attributes(y), attributes(rec)
        tempo_ok.append(abs(b1 / b0 - 1) <= 0.04)
        cent_ok.append(abs(c1 / c0 - 1) <= 0.10)
        rel_cent.append(c1 / c0 - 1)
        band_db.append(band_level_change_db(rec, y))
    return {
        "clips": n,
        "tempo_within_4pct": float(np.mean(tempo_ok)),
        "centroid_within_10pct": float(np.mean(cent_ok)),
        "centroid_rel_error_median": float(np.median(rel_cent)),
        "band_edges_hz": list(BAND_EDGES_HZ),
        "band_level_change_db": _mean_per_band(band_db),
    }


@torch.no_grad()
def stem_round_trip(encodec, n: int = 40, base_seed: int = 1) -> dict:
    """Round trip of each held-out clip's drums alone and pitched part alone (the mix's stems, at their
    level in the mix): level change per octave band (dB, mean over clips). A codec whose codes carry
    the pitched part keeps it when it plays alone and adds nothing to the drums alone in its bands."""
    change = {"drums": [], "pitched": []}
    for i in range(n):
        for name, stem in zip(("drums", "pitched"), render_stems(spec_for_index(i, base_seed)), strict=True):
            rec = round_trip(encodec, stem)
            change[name].append(band_level_change_db(rec, stem))
    out = {"clips": n, "band_edges_hz": list(BAND_EDGES_HZ)}
    out.update({k: _mean_per_band(dbs) for k, dbs in change.items()})
    return out


TONE_TEST_HZ = (65.0, 200.0, 450.0, 900.0, 2000.0)
PROMPT_SEEDS = (0, 1, 2)  # sampling seeds of the prompt-following clips (one seed's accuracy varies by ~0.05)


@torch.no_grad()
def tone_round_trip(encodec, freqs_hz: tuple[float, ...] = TONE_TEST_HZ, seconds: float = 2.0) -> dict:
    """RMS of the decoded / RMS of the input for a steady sine and for the same sine in decaying notes
    (four a second), per frequency: how much of a held tone vs a plucked one the codec keeps
    (1 = all). Edges (0.1 s each side) are left out."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    edge = int(0.1 * SAMPLE_RATE)
    out: dict[str, list[float]] = {"freqs_hz": list(freqs_hz), "steady": [], "decaying_notes": []}
    for f in freqs_hz:
        steady = 0.2 * np.sin(2 * np.pi * f * t)
        for kind, y in (("steady", steady), ("decaying_notes", steady * np.exp(-6.0 * ((4.0 * t) % 1.0)))):
            rms = [float(np.sqrt(np.mean(a[edge:-edge] ** 2))) for a in (round_trip(encodec, y), y)]
            out[kind].append(rms[0] / rms[1])
    return out


def reference_clips(n: int = 24, base_seed: int = 1) -> dict:
    """The estimators on real synthetic clips of each pole (ceiling for prompt following)."""
    rng = np.random.default_rng([base_seed, 99])
    bpm = {"fast": [], "slow": []}
    cent = {"bright": [], "dark": []}
    for i in range(n):
        s = spec_for_index(i, base_seed)
        fast = ClipSpec(
            float(rng.uniform(FAST_BPM, BPM_RANGE[1])), s.brightness, s.instrument, s.pattern, s.key, s.seed
        )
        slow = ClipSpec(
            float(rng.uniform(BPM_RANGE[0], SLOW_BPM)), s.brightness, s.instrument, s.pattern, s.key, s.seed
        )
        bpm["fast"].append(attributes(render(fast))[0])
        bpm["slow"].append(attributes(render(slow))[0])
        bright = ClipSpec(s.bpm, float(rng.uniform(BRIGHT_MIN, 1.0)), s.instrument, s.pattern, s.key, s.seed)
        dark = ClipSpec(s.bpm, float(rng.uniform(0.0, DARK_MAX)), s.instrument, s.pattern, s.key, s.seed)
        cent["bright"].append(attributes(render(bright))[1])
        cent["dark"].append(attributes(render(dark))[1])
    out = {"tempo": tempo_summary(bpm)}
    out["centroid"] = {
        "median_hz_bright": float(np.median(cent["bright"])),
        "median_hz_dark": float(np.median(cent["dark"])),
        "auroc_bright_gt_dark": auroc(cent["bright"], cent["dark"]),
    }
    return out


@torch.no_grad()
def generate(
    model, tokenizer, prompts: list[str], seconds: float, seed: int = 0, batch: int = 16
) -> list[np.ndarray]:
    """Sample audio for each prompt (generation_config defaults: CFG, top-k). -> list of (samples,)."""
    frames = int(round(seconds * model.config.audio_encoder.frame_rate))
    k = model.config.decoder.num_codebooks
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch):
        tok = tokenizer(prompts[i : i + batch], padding=True, return_tensors="pt")
        audio = model.generate(**tok, max_new_tokens=frames + k - 1)
        out += [a[0].float().numpy() for a in audio]
    return out


def prompt_following(
    model, tokenizer, n: int = 16, seconds: float = 4.0, seeds: tuple[int, ...] = PROMPT_SEEDS
) -> dict:
    """Unsteered: fast vs slow and bright vs dark probe prompts (first ``n`` of each pole), each
    sampled once per seed in ``seeds``; the numbers pool all clips (with 16 prompts per pole one
    clip is 3% of a single seed's accuracy, and seeds differ by up to 0.1)."""
    sets = probe_sets()
    tempo_prompts, timbre_prompts = sets["testbed_tempo"]["prompts"], sets["testbed_timbre"]["prompts"]

    def pooled(prompts: dict, index: int) -> dict[str, list[float]]:
        return {
            pole: [
                attributes(y)[index]
                for seed in seeds
                for y in generate(model, tokenizer, prompts[pole][:n], seconds, seed)
            ]
            for pole in prompts
        }

    bpm = pooled({p: tempo_prompts[p] for p in ("fast", "slow")}, 0)
    cent = pooled({p: timbre_prompts[p] for p in ("bright", "dark")}, 1)
    out = {"prompts_per_pole": n, "seconds": seconds, "seeds": list(seeds), "tempo": tempo_summary(bpm)}
    out["tempo"]["accuracy_octave_aware_per_seed"] = [  # clips are seed-major: seed i is [i * n, (i + 1) * n)
        tempo_summary({p: v[i * n : (i + 1) * n] for p, v in bpm.items()})["accuracy_octave_aware"]
        for i in range(len(seeds))
    ]
    out["centroid"] = {
        "median_hz_bright": float(np.median(cent["bright"])),
        "median_hz_dark": float(np.median(cent["dark"])),
        "auroc_bright_gt_dark": auroc(cent["bright"], cent["dark"]),
    }
    return out


def generation_time(model, tokenizer, seconds: float = 5.0, repeats: int = 2) -> dict:
    """Wall seconds to generate ``seconds`` of audio for one prompt (CFG on), best of ``repeats``."""
    prompt = probe_sets()["testbed_neutral"]["prompts"][0]
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(model, tokenizer, [prompt], seconds, seed=r)
        times.append(time.perf_counter() - t0)
    return {"seconds_audio": seconds, "wall_s": float(min(times)), "threads": torch.get_num_threads()}


def evaluate(
    model_dir: str | Path,
    n_clips: int = 40,
    n_prompts: int = 16,
    heldout_seed: int = 1,
    seeds: tuple[int, ...] = PROMPT_SEEDS,
) -> dict:
    """All of the above for the saved model in ``model_dir``."""
    model = MusicgenForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    t0 = time.time()
    results = {"codec_round_trip": codec_round_trip(model.audio_encoder, n_clips, heldout_seed)}
    results["codec_round_trip"]["tone_rms_ratio"] = tone_round_trip(model.audio_encoder)
    results["codec_round_trip"]["stems"] = stem_round_trip(model.audio_encoder, n_clips, heldout_seed)
    print("codec round trip:", json.dumps(results["codec_round_trip"]), flush=True)
    results["reference_real_clips"] = reference_clips(n_prompts, heldout_seed)
    print("reference (real clips):", json.dumps(results["reference_real_clips"]), flush=True)
    results["prompt_following"] = prompt_following(model, tokenizer, n_prompts, seeds=tuple(seeds))
    print("prompt following:", json.dumps(results["prompt_following"]), flush=True)
    results["generation_time"] = generation_time(model, tokenizer)
    print("generation time:", json.dumps(results["generation_time"]), flush=True)
    results["eval_wall_s"] = time.time() - t0
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/testbed")
    parser.add_argument("--n-clips", type=int, default=40, help="held-out clips for the codec round trip")
    parser.add_argument("--n-prompts", type=int, default=16, help="prompts per pole")
    parser.add_argument("--heldout-seed", type=int, default=1)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(PROMPT_SEEDS),
        help="sampling seeds of the prompt-following clips",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--study",
        nargs="+",
        default=None,
        help="finished `steerlit run experiment=testbed_study` folder(s); a second one (the same grid "
        "re-summarised with metrics.attributes.testbed_tempo=onset_rate) adds its other-attribute groups",
    )
    parser.add_argument("--only-study", action="store_true", help="report the --study folder only")
    parser.add_argument(
        "--study-note",
        default="",
        help="what the --study runs were (e.g. a reduced grid); the model card says it",
    )
    args = parser.parse_args(argv)
    if args.only_study and not args.study:
        parser.error("--only-study needs --study RUN_FOLDER")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".cache") / "numba"))
    results = (
        {}
        if args.only_study
        else evaluate(args.model, args.n_clips, args.n_prompts, args.heldout_seed, tuple(args.seeds))
    )
    if args.study:
        results["steering"] = studies_report(args.study)
        if args.study_note:
            results["steering"]["note"] = args.study_note
        print(format_report(results["steering"]["groups"]))
    print(json.dumps(results, indent=2))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(results, indent=2))  # eval.json's format


if __name__ == "__main__":
    main()
