"""Dry-run estimates: the row count is the grid builder's, times scale with rows and steps, devices divide the
time, and unknown shapes fail with one clear error."""

from __future__ import annotations

import dataclasses

import pytest

from steerlit.config import compose
from steerlit.engines.grid import build_grid
from steerlit.engines.settings import GenerationSettings
from steerlit.models.musicgen_shapes import DECODER_SHAPES, build_random_checkpoint
from steerlit.models.tiny import install_in_hub_cache, tiny_musicgen_config
from steerlit.study.estimate import (
    EstimateError,
    ExtractionShape,
    GridShape,
    Hardware,
    decode_steps,
    decoder_shape_for,
    estimate_for_study,
    estimate_study,
    format_estimate,
    format_estimates,
    grid_shape_for,
)

SMALL = DECODER_SHAPES["small"]
NO_EXTRACTION = ExtractionShape(prompts=0)


def test_rows_equal_the_grid_builder():
    prompts, seeds, alphas = ["a", "b", "c"], [0, 1], [-2.0, 0.0, 1.0, 2.0]
    rows = build_grid(
        prompts,
        seeds,
        concepts=["tempo", "timbre"],
        methods=["diffmean", "regression", "random"],
        layers=[3, 9],
        alphas=alphas,
        strategies=["one_to_all", "one_to_one"],
    )
    by_hand = 3 * 2 * (1 + 2 * 3 * 2 * 2 * 3)  # prompts x seeds x (reference + steered combinations)
    grid = GridShape(prompts=3, seeds=2, concepts=2, methods=3, layers=2, strategies=2, steered_alphas=3)
    assert grid.rows == len(rows) == by_hand


def test_grid_shape_of_composed_settings():
    settings = compose(["model=tiny", "steer.alphas=[-1,0,0,1]", "steer.layers=[1,2]", "steer.seeds=[0,1,2]"])
    grid = grid_shape_for(settings, eval_prompts=100)
    assert (grid.layers, grid.seeds, grid.steered_alphas) == (2, 3, 2)
    assert grid.prompts == min(100, settings.steer.n_prompts or 100)


def test_grid_shape_counts_the_controls_that_have_directions():
    base = ["model=tiny", "steer.methods=[diffmean,regression]", "steer.controls=[random]"]
    with_random = compose([*base, "fit.methods=[diffmean,regression,random]"])
    assert grid_shape_for(with_random, eval_prompts=4).methods == 3  # random is steered as a control
    without = compose([*base, "fit.methods=[diffmean,regression]"])
    assert grid_shape_for(without, eval_prompts=4).methods == 2  # no random directions: the grid skips it


def estimate(rows_prompts=4, seconds=2.0, devices=1, device="cuda", engine="hf", batch=4, extraction=None):
    grid = GridShape(prompts=rows_prompts, seeds=1, steered_alphas=3)
    generation = GenerationSettings(seconds=seconds, batch_size=batch, engine=engine)
    return estimate_study(SMALL, grid, generation, extraction or NO_EXTRACTION, Hardware(device, devices))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_time_is_linear_in_rows_and_steps(device, engine):
    one, three = estimate(4, device=device, engine=engine), estimate(12, device=device, engine=engine)
    assert three.rows == 3 * one.rows and three.batches_per_device == 3 * one.batches_per_device
    for stage in ("grid decode", "audio decode", "metrics"):
        assert three.stage_seconds[stage] == pytest.approx(3 * one.stage_seconds[stage])
    short, long = estimate(seconds=2.0, device=device), estimate(seconds=6.0, device=device)
    assert (short.decode_steps, long.decode_steps) == (103, 303) == (decode_steps(2.0), decode_steps(6.0))
    ratio = long.stage_seconds["grid decode"] / short.stage_seconds["grid decode"]
    assert ratio == pytest.approx((303 + 2) / (103 + 2))  # + the prefill HF throws away and the text encoding


def test_more_devices_divide_the_time():
    extraction = ExtractionShape(prompts=256, batch_size=16)
    one = estimate(64, devices=1, extraction=extraction)
    eight = estimate(64, devices=8, extraction=extraction)
    assert one.rows == eight.rows and one.batches_per_device == 8 * eight.batches_per_device
    for stage in ("extraction", "grid decode", "audio decode", "metrics"):
        assert eight.stage_seconds[stage] == pytest.approx(one.stage_seconds[stage] / 8)
    assert eight.stage_seconds["load"] == one.stage_seconds["load"]  # every rank loads its own copy


def test_fast_engine_and_gpu_are_faster_and_larger_models_slower():
    hf, fast = estimate(64, engine="hf", batch=64), estimate(64, engine="fast", batch=64)
    assert fast.stage_seconds["grid decode"] < hf.stage_seconds["grid decode"] / 4
    cpu, gpu = estimate(device="cpu"), estimate(device="cuda")
    assert cpu.stage_seconds["grid decode"] > gpu.stage_seconds["grid decode"]
    grid, gen = GridShape(prompts=8), GenerationSettings(seconds=10.0, batch_size=8)
    by_size = [
        estimate_study(DECODER_SHAPES[s], grid, gen, NO_EXTRACTION, Hardware("cuda"))
        for s in ("small", "medium", "large")
    ]
    times = [e.stage_seconds["grid decode"] for e in by_size]
    assert times[0] < times[1] < times[2]
    # HF is launch-bound: large/small ~2 (measured 29-33 vs 62-67 steps/s)
    assert 1.8 < times[2] / times[0] < 2.4


def test_unknown_shapes_and_bad_input_fail_clearly(tmp_path):
    with pytest.raises(EstimateError, match="not a public MusicGen size"):
        decoder_shape_for("someone/unknown-model", hf_cache_dir=str(tmp_path))
    with pytest.raises(EstimateError, match="No decoder shape for 'nonsense'"):
        decoder_shape_for("nonsense")
    with pytest.raises(EstimateError, match="devices must be >= 1"):
        Hardware("cuda", 0)
    with pytest.raises(ValueError, match="Unknown device kind"):
        Hardware("tpu")
    with pytest.raises(EstimateError, match="no rows"):
        estimate(0)


def test_shapes_from_names_folders_and_the_hub_cache(tmp_path):
    assert decoder_shape_for("facebook/musicgen-large") == DECODER_SHAPES["large"]
    assert decoder_shape_for("musicgen_medium") == DECODER_SHAPES["medium"]
    assert decoder_shape_for("tiny").layers == 4
    config = tiny_musicgen_config(num_layers=3, hidden_size=48, num_heads=4, codebook_size=2048)
    snapshot = build_random_checkpoint("small", tmp_path, config=config)
    assert decoder_shape_for(str(snapshot)).layers == 3  # a folder
    install_in_hub_cache(snapshot, tmp_path, "me/mine")  # a hub id that is not a public size
    assert decoder_shape_for("me/mine", hf_cache_dir=str(tmp_path)).hidden == 48


def test_estimate_for_composed_study_and_tables():
    settings = compose(["model=facebook/musicgen-small", "probe=tempo_timbre", "steer.layers=[6,12]"])
    settings = dataclasses.replace(settings, steer=dataclasses.replace(settings.steer, seconds=10.0))
    est = estimate_for_study(settings)
    assert est.shape == SMALL and est.grid.concepts == 2 and est.grid.layers == 2
    assert est.decode_steps == 503 and est.stage_seconds["extraction"] > 0
    text = format_estimate(est)
    assert "grid rows" in text and f"{est.rows:,}" in text and "total" in text
    table = format_estimates([est, est])
    assert table.count("\n") == 3 and "| facebook/musicgen-small |" in table
