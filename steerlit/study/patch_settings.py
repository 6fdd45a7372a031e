"""The settings of the patching study (``steerlit patch``, ``experiment=patching_tempo``): light, config-ready."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from steerlit.directions.settings import ProbeTrainSettings
from steerlit.intervene.gate import GateMode
from steerlit.intervene.injection import Strategy
from steerlit.intervene.patching import PatchHalf
from steerlit.study.statistics import Statistic  # how a map cell summarises its pairs

Pole = Literal["positive", "negative"]  # the pole a concept is steered towards


def _gate_probe_training() -> ProbeTrainSettings:
    return ProbeTrainSettings(lr=0.05, weight_decay=0.01, max_epochs=60, batch_size=1024)  # full batch


@dataclass(frozen=True)
class GateSettings:
    """Head probes and the gated trade-off: per concept (aligned with the study's concepts) a source ``layers``
    entry, a ``strategies`` entry and the target pole (``poles``: ``positive`` | ``negative``); ``alphas``
    steered towards it, gate ``modes`` (plus the constant baseline) with ``threshold`` on p(target pole)
    averaged over steps with ``smoothing``;
    ``n_prompts`` prompts of ``eval_set``; probe recordings over ``head_steps`` decoding steps, split by
    ``split``, probes trained with ``probe``."""

    layers: tuple[int, ...] = (1, 3)
    strategies: tuple[Strategy, ...] = ("one_to_all", "one_to_one")
    poles: tuple[Pole, ...] = ("negative", "positive")  # testbed: tempo towards slow, timbre towards bright
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    modes: tuple[GateMode, ...] = ("stop", "proportional")
    threshold: float = 0.6
    smoothing: float = 0.9  # moving average of the per-step readings (one step's reading is noisy)
    eval_set: str = "testbed_neutral"
    n_prompts: int = 8
    head_steps: int = 24
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    probe: ProbeTrainSettings = field(default_factory=_gate_probe_training)


@dataclass(frozen=True)
class PatchSettings:
    """The patching study: ``concepts`` (probe sets with ``pairs``), ``n_pairs`` twins each, the sites of each
    of ``site_kinds`` at ``layers`` (None: all; one map per kind), decoding-step ``windows`` (``"start-stop"``,
    ``"start-end"``: to the end), CFG ``half`` patched; maps summarise pairs by ``statistic`` (median | mean) with a ``ci`` bootstrap
    interval (``n_boot`` resamples); pairs whose |log source / target| attribute gap is below ``min_gap`` are
    dropped; ``gate``: the head-probe maps and the gated trade-off; ``threads``: torch's intra-op threads and
    the BLAS pools while ``steerlit patch`` runs (:func:`steerlit.runtime.limited_threads`; None:
    left as they are, one per core; the testbed experiments use 1: its small matrices gain little from a
    second thread, and on a shared machine two spinning threads run several times slower)."""

    concepts: tuple[str, ...] = ("testbed_tempo", "testbed_timbre")
    n_pairs: int = 8
    site_kinds: tuple[str, ...] = ("xattn_out",)  # cross-attention: where each layer reads the text
    layers: tuple[int, ...] | None = None
    windows: tuple[str, ...] = ("0-10", "0-50", "50-end", "0-end")
    half: PatchHalf = "both"  # both | cond: patching refuses uncond
    statistic: Statistic = "median"
    ci: float = 0.9
    n_boot: int = 2000
    min_gap: float = 0.05
    seed: int = 0
    gate: GateSettings = field(default_factory=GateSettings)
    threads: int | None = None


def check_gate_alignment(gate: GateSettings, concepts: Sequence[str]) -> None:
    """``gate.layers``, ``strategies`` and ``poles`` hold one entry per concept (ValueError naming the counts)."""
    if not len(gate.layers) == len(gate.strategies) == len(gate.poles) == len(concepts):
        raise ValueError(
            f"patch.gate.layers, strategies and poles need one entry per concept ({list(concepts)}): "
            f"got {len(gate.layers)}, {len(gate.strategies)} and {len(gate.poles)}."
        )
