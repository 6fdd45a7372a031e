"""``steerlit patch``: the patching study (:func:`steerlit.study.patching.run_patching`) as one job.

:func:`validate_patch` checks every ``patch.*`` setting that needs no weights (windows, site kinds, the gate's
per-concept entries, layers against the model's config.json, the probe files and their pairs) and raises one
:class:`~steerlit.study.settings.ConfigError` naming the key; :func:`run_patch_study` then writes a new run
folder (:class:`~steerlit.study.layout.RunLayout`: ``config.yaml`` and every map, probe map and trade-off file at
its top level, W&B under ``wandb/``), logging to W&B with job type ``patch`` when the logger is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L

from steerlit.data.probe_set import load_eval_prompts, load_probe_set
from steerlit.intervene.gate import GateError, check_gate_levels
from steerlit.intervene.patching import StepWindow
from steerlit.models.loading import load_adapter
from steerlit.models.sites import SITE_KINDS
from steerlit.runtime import limited_threads
from steerlit.study.launch import resolve_run_root
from steerlit.study.layout import RunLayout
from steerlit.study.patch_settings import PatchSettings, check_gate_alignment
from steerlit.study.patching import log_patching, run_patching
from steerlit.study.run import end_run, start_run
from steerlit.study.settings import ConfigError, StudySettings, as_dict
from steerlit.study.stages import model_num_layers, progress
from steerlit.study.tables import attribute_for
from steerlit.study.tracking import wandb_logger

PATCH_JOB_TYPE = "patch"  # the W&B job type of `steerlit patch`
PATCH_SUMMARY = "summary.json"  # run_patching's summary: a folder holding it has a finished patching study


def validate_patch_axes(patch: PatchSettings, num_layers: int) -> None:
    """Pairs, windows, site kinds, layers, the bootstrap and threads of ``patch`` (ConfigError naming the key)."""
    if not patch.concepts:
        raise ConfigError(
            "patch.concepts is empty: name at least one probe set with pairs (e.g. testbed_tempo)."
        )
    if patch.n_pairs < 1:
        raise ConfigError(f"patch.n_pairs must be >= 1, got {patch.n_pairs}.")
    if not patch.windows:
        raise ConfigError("patch.windows is empty: give step windows such as patch.windows=[0-10,0-end].")
    for window in patch.windows:
        try:
            StepWindow.parse(window)
        except ValueError as err:
            raise ConfigError(f"patch.windows: {err}") from None
    unknown = [k for k in patch.site_kinds if k not in SITE_KINDS]
    if unknown or not patch.site_kinds:
        raise ConfigError(
            f"patch.site_kinds {unknown or '[]'}: choose per-layer kinds from {sorted(SITE_KINDS)}."
        )
    for key, layers in (("patch.layers", patch.layers or ()), ("patch.gate.layers", patch.gate.layers)):
        bad = [int(x) for x in layers if not 0 <= int(x) < num_layers]
        if bad:
            raise ConfigError(
                f"{key} has layers {bad} out of range: the model has layers 0..{num_layers - 1}."
            )
    if patch.threads is not None and patch.threads < 1:
        raise ConfigError(f"patch.threads must be >= 1 (or null: torch's default), got {patch.threads}.")
    if not 0 < patch.ci < 1 or patch.n_boot < 1:
        raise ConfigError(
            f"patch.ci must be in (0, 1) and patch.n_boot >= 1, got {patch.ci} and {patch.n_boot}."
        )


def validate_gate(patch: PatchSettings) -> None:
    """The head-probe and trade-off settings (``patch.gate.*``)."""
    gate = patch.gate
    try:
        check_gate_alignment(gate, patch.concepts)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not gate.alphas or not gate.modes:
        raise ConfigError("patch.gate.alphas and patch.gate.modes need at least one entry each.")
    try:
        check_gate_levels(gate.threshold, gate.smoothing)
    except GateError as err:
        raise ConfigError(f"patch.gate.threshold / patch.gate.smoothing: {err}") from None
    if gate.n_prompts < 1 or gate.head_steps < 1:
        raise ConfigError(
            f"patch.gate.n_prompts and patch.gate.head_steps must be >= 1, got {gate.n_prompts}, {gate.head_steps}."
        )
    if len(gate.split) != 3 or abs(sum(gate.split) - 1) > 1e-6 or min(gate.split) < 0:
        raise ConfigError(
            f"patch.gate.split is (train, val, test) fractions summing to 1, got {list(gate.split)}."
        )


def validate_patch_files(patch: PatchSettings) -> None:
    """Every concept's probe set loads, has at least ``n_pairs`` pairs and an attribute; the eval set loads."""
    for name in patch.concepts:
        try:
            probe_set = load_probe_set(name)
            attribute_for(probe_set.name)
        except ValueError as err:
            raise ConfigError(f"patch.concepts {name!r}: {err}") from None
        if len(probe_set.pairs) < patch.n_pairs:
            raise ConfigError(
                f"patch.concepts {name!r} has {len(probe_set.pairs)} pairs, fewer than patch.n_pairs="
                f"{patch.n_pairs}; lower patch.n_pairs or add pairs to {probe_set.where}."
            )
    try:
        load_eval_prompts(patch.gate.eval_set)
    except ValueError as err:
        raise ConfigError(f"patch.gate.eval_set {patch.gate.eval_set!r}: {err}") from None


def validate_patch(settings: StudySettings) -> None:
    """Every check of ``settings.patch`` before any weights load or folder is made (the depth from config.json)."""
    validate_gate(settings.patch)
    validate_patch_axes(settings.patch, model_num_layers(settings.model))
    validate_patch_files(settings.patch)


def run_patch_study(
    settings: StudySettings, *, report: Callable[[str], None] = progress
) -> tuple[RunLayout, dict]:
    """Validate, then run the patching study into a new run folder (``report``: the progress lines, timestamped
    and flushed by default); returns the folder and the summary."""
    validate_patch(settings)
    root = resolve_run_root(settings.output_dir, settings.run_name, settings.experiment)
    if (root / PATCH_SUMMARY).exists():
        raise ConfigError(
            f"{root} already holds a patching study ({PATCH_SUMMARY}); pass a new run_name= (or leave it unset)."
        )
    L.seed_everything(settings.seed, verbose=False)
    layout = start_run(settings)
    report(f"run folder {layout.root}")
    try:
        with (
            limited_threads(settings.patch.threads),
            wandb_logger(settings.logger, layout, as_dict(settings), job_type=PATCH_JOB_TYPE) as logger,
        ):
            adapter = load_adapter(settings.model)
            generation = settings.steer.generation()
            summary = run_patching(
                adapter, layout.root, settings.patch, generation, settings.metrics, progress=report
            )
            log_patching(summary, logger.experiment if logger is not None else None)
    finally:
        end_run(layout)
    return layout, summary


def format_patch_outputs(summary: Mapping, root: Path) -> str:
    """The strongest cell of each map (concept, site kind, measure), the stage times and every file written."""
    best: dict[tuple, Mapping] = {}
    for row in summary["maps"]:
        key = (row["concept"], row["site_kind"], row["measure"])
        if math.isfinite(row["effect"]) and (key not in best or row["effect"] > best[key]["effect"]):
            best[key] = row
    lines = ["strongest patching cells (normalised effect, CI over pairs):"]
    lines += [
        f"  {c} {kind} {measure}: layer {r['layer']} steps {r['window']}: {r['effect']:.2f} "
        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] over {r['n_pairs']} pairs"
        for (c, kind, measure), r in best.items()
    ]
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))
    lines.append(f"files in {root}:")
    lines += [f"  {relative_name(f, root)}" for f in [*summary["files"], PATCH_SUMMARY]]
    return "\n".join(lines)


def relative_name(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (e.g. ``testbed_tempo/directions.safetensors``); as given when outside it."""
    path = Path(path)
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
