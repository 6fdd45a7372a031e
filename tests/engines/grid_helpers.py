"""Helpers shared by the grid tests (and their subprocesses): random directions, a small grid, metrics."""

from __future__ import annotations

import time

import numpy as np
import torch

from steerlit.directions.io import DirectionSet
from steerlit.engines.grid import GridRow, SteerTerm, build_grid
from steerlit.engines.settings import GenerationSettings

PROMPTS = ["a fast techno track", "slow jazz piano", "bright acoustic guitar"]
STEPS = 12  # decoding steps per row: 9 frames of audio on the tiny model
SECONDS = 0.18  # what gives STEPS on the tiny model (50 Hz, 4 codebooks)


def grid_generation(**fields) -> GenerationSettings:
    """The tests' generation settings: SECONDS per clip, other fields as given (default batch size 16)."""
    return GenerationSettings(seconds=SECONDS, **fields)


def random_directions(hidden: int, num_layers: int, concepts=("tempo", "timbre"), norm: float = 8.0):
    out = {}
    for c, concept in enumerate(concepts):
        g = torch.Generator().manual_seed(100 + c)
        vecs = {}
        for method in ("diffmean", "probe"):
            for layer in range(num_layers):
                v = torch.randn(hidden, generator=g)
                vecs[(method, f"resid_post.{layer}")] = v / v.norm() * norm
        out[concept] = DirectionSet(vecs, {"model_id": "tiny", "concept": concept})
    return out


def small_grid() -> list[GridRow]:
    """18 rows: 2 prompts × 2 seeds × (reference + 3 steered), plus 2 two-concept rows (one without a reference)."""
    rows = build_grid(
        PROMPTS[:2],
        [3, 11],
        concepts=["tempo"],
        methods=["diffmean"],
        layers=[1, 2],
        alphas=[0.0, 2.0],
        strategies=["one_to_all", "one_to_one"],
    )
    rows = [r for r in rows if r.is_reference or r.terms[0].layer == 1 or r.terms[0].strategy == "one_to_all"]
    multi = (SteerTerm("tempo", "diffmean", 1, 1.5), SteerTerm("timbre", "probe", 2, -1.0, "one_to_one"))
    rows += [GridRow(PROMPTS[2], 5, multi, 2), GridRow(PROMPTS[0], 3, multi, 0)]
    return rows


def rms_metrics(audio: np.ndarray, sr: int) -> dict:
    return {
        "rms": float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))),
        "peak": float(np.abs(audio).max()),
    }


def slow_rms_metrics(audio: np.ndarray, sr: int) -> dict:
    time.sleep(0.4)
    return rms_metrics(audio, sr)


def comparable(records) -> list[dict]:
    """Records sorted by key, without in-memory-only fields."""
    return sorted(({k: v for k, v in r.items() if k != "codes"} for r in records), key=lambda r: r["key"])
