"""The stages of a study before the grid: read the probe sets, extract activations, fit directions; and what the
grid needs from them (evaluation prompts, source layers, the plan).

Each stage takes only its own settings. The steer → measure → report stages are in
:mod:`steerlit.study.evaluation`; :func:`steerlit.study.run.run_study` runs them all in order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from steerlit.data.probe_set import ProbeSet, load_eval_prompts, load_probe_set
from steerlit.data.settings import ProbeSettings
from steerlit.directions.ddp import spawns_ranks
from steerlit.directions.extraction import extract_activations
from steerlit.directions.fit import fit_directions
from steerlit.directions.io import DirectionSet, load_directions
from steerlit.directions.settings import ExtractSettings, FitSettings
from steerlit.models.loading import load_model, resolve_model_path
from steerlit.models.settings import ModelSettings
from steerlit.runtime import TrainerSettings
from steerlit.study.evaluation import GridPlan
from steerlit.study.layout import RunLayout
from steerlit.study.settings import (
    SteerSettings,
    StudySettings,
    check_clip_length,
    check_layers,
    steered_methods,
)

PROBE_METHODS = ("logistic", "regression")  # what a grid steers with while the probes train


def progress(message: str) -> None:
    """One line of the run's progress on stdout."""
    print(f"[steerlit {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_concept(concept: str, probe: ProbeSettings) -> ProbeSet:
    """A probe set by name or path, cut to its first ``probe.max_per_pole`` prompts per pole when set."""
    probe_set = load_probe_set(concept)
    n = probe.max_per_pole
    if not n:
        return probe_set
    return dataclasses.replace(
        probe_set,
        positive_prompts=probe_set.positive_prompts[:n],
        negative_prompts=probe_set.negative_prompts[:n],
        pairs=probe_set.pairs[:n],
    )


def model_config(model: ModelSettings):
    """The model's transformers config from its config.json alone (no weights), to validate settings early."""
    from transformers import AutoConfig  # deferred: transformers

    path, model_id = resolve_model_path(model.name)
    try:
        return AutoConfig.from_pretrained(
            str(path) if path is not None else model_id, local_files_only=True, cache_dir=model.hf_cache_dir
        )
    except OSError:
        load_model(model.name, hf_cache_dir=model.hf_cache_dir)  # raises the one clear error
        raise


def model_num_layers(model: ModelSettings) -> int:
    """The decoder depth from the model's config.json alone (no weights), to validate layers early."""
    return int(model_config(model).decoder.num_hidden_layers)


def check_model_settings(settings: StudySettings) -> None:
    """The checks that need the model's config.json but no weights: layers in range, a clip of at least one
    frame (``steer.seconds``)."""
    config = model_config(settings.model)
    check_layers(settings, int(config.decoder.num_hidden_layers))
    check_clip_length("steer.seconds", settings.steer.seconds, float(config.audio_encoder.frame_rate))


def extract(
    layout: RunLayout,
    probe_set: ProbeSet,
    adapter,
    settings: ExtractSettings,
    probe: ProbeSettings,
    trainer: TrainerSettings,
    *,
    callbacks: Sequence = (),
    model: ModelSettings | None = None,
) -> Path:
    """Cache ``probe_set``'s activations into its concept folder (resumable); returns the cache folder.

    ``settings.layers=None`` records ``settings.site_kind`` at every layer of the model. ``model``: the settings
    ``adapter`` was loaded with; spawned ranks (``ddp_spawn``), which cannot receive a loaded model, load these."""
    if settings.layers is None:
        settings = dataclasses.replace(settings, layers=tuple(range(adapter.num_layers)))
    n_prompts = len(probe_set.positive_prompts) + len(probe_set.negative_prompts)
    progress(f"{probe_set.name}: caching {len(settings.layers)} sites for {n_prompts} prompts")
    source = model if model is not None and spawns_ranks(trainer) else adapter
    return extract_activations(
        layout.concept(probe_set.name), probe_set, source, settings, probe, trainer, callbacks=callbacks
    )


def fit(layout: RunLayout, concept: str, settings: FitSettings, trainer: TrainerSettings, **options) -> Path:
    """Fit every method of ``settings`` on a concept's cache; returns its directions file. ``options`` are
    :func:`~steerlit.directions.fit.fit_directions`'s (``seed``, probe ``callbacks``, ``wandb_run``, ``logger``)."""
    progress(f"{concept}: fitting {list(settings.methods)}")
    return fit_directions(layout.concept(concept), settings, trainer, **options)


def load_concept_directions(
    layout: RunLayout, concepts: Sequence[str], adapter, steer: SteerSettings
) -> dict[str, DirectionSet]:
    """``{concept: DirectionSet}`` from the run's directions files, checked against the model (a file fitted on
    another model needs ``steer.allow_other_model``)."""
    return {
        c: load_directions(layout.directions(c), adapter, allow_other_model=steer.allow_other_model)
        for c in concepts
    }


def probe_directions(concept: str) -> Callable[[object], dict[str, DirectionSet]]:
    """Directions of a probe while it trains: ``module -> {concept: DirectionSet({(kind, site): w})}``."""

    def provider(module) -> dict[str, DirectionSet]:
        vectors = {
            (module.kind, s): v.detach().float().cpu() for s, v in module.directions("diffmean").items()
        }
        return {concept: DirectionSet(vectors)}

    return provider


def source_layers(steer: SteerSettings, num_layers: int) -> tuple[int, ...]:
    """The grid's source layers: ``steer.layers``, else the middle layer."""
    return tuple(int(x) for x in steer.layers) if steer.layers else (num_layers // 2,)


def grid_plan(
    steer: SteerSettings,
    probe: ProbeSettings,
    concepts: Sequence[str],
    num_layers: int,
    *,
    methods: Sequence[str] | None = None,
) -> GridPlan:
    """The steering grid over the first ``steer.n_prompts`` prompts of ``probe.eval_set``, steering ``methods``
    (default ``steer.methods``) and the ``steer.controls`` (those without directions are skipped by the plan)."""
    prompts = load_eval_prompts(probe.eval_set)
    prompts = prompts[: steer.n_prompts] if steer.n_prompts else prompts
    return GridPlan(
        steer,
        tuple(prompts),
        tuple(concepts),
        source_layers(steer, num_layers),
        steered_methods(steer, tuple(methods) if methods is not None else None),
    )
