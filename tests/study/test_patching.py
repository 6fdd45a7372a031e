import json

import numpy as np
import pytest
import wandb
import yaml

from steerlit.engines.settings import GenerationSettings
from steerlit.metrics.settings import MetricsSettings
from steerlit.study.gating import constant_distance_at
from steerlit.study.patch_settings import GateSettings, PatchSettings
from steerlit.study.patching import bootstrap_ci, log_patching, run_patching

PAIRS = {
    "tempo": ("fast", "slow", ["drums", "piano", "bass", "organ", "strings", "synth"]),
    "timbre": ("bright", "dark", ["drums", "piano", "bass", "organ", "strings", "synth"]),
}


def write_probe_sets(folder):
    paths = {}
    for name, (pos, neg, nouns) in PAIRS.items():
        pairs = [{pos: f"{pos} {n} loop", neg: f"{neg} {n} loop"} for n in nouns]
        data = {
            "name": f"toy_{name}",
            "description": "toy",
            "poles": {"positive": pos, "negative": neg},
            "prompts": {pos: [p[pos] for p in pairs], neg: [p[neg] for p in pairs]},
            "pairs": pairs,
        }
        paths[name] = folder / f"toy_{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data))
    neutral = {"name": "toy_neutral", "description": "toy", "kind": "eval", "prompts": ["a loop", "a song"]}
    (folder / "toy_neutral.yaml").write_text(yaml.safe_dump(neutral))
    return paths, folder / "toy_neutral.yaml"


def test_settings_are_checked_before_any_generation(tiny_adapter, tmp_path):
    with pytest.raises(ValueError, match="one entry per concept"):
        run_patching(
            tiny_adapter,
            tmp_path,
            PatchSettings(),
            GenerationSettings(),
            MetricsSettings(),
            probe_sets={"a": None},
        )
    with pytest.raises(ValueError, match="not 'start-stop'"):
        run_patching(
            tiny_adapter, tmp_path, PatchSettings(windows=("late",)), GenerationSettings(), MetricsSettings()
        )


def test_bootstrap_ci():
    stat, low, high = bootstrap_ci(np.array([0.0, 1.0, 2.0, np.nan, 3.0]), "median", 0.9, 500, 0)
    assert stat == 1.5 and low <= stat <= high
    assert np.isnan(bootstrap_ci(np.array([np.nan]), "mean", 0.9, 10, 0)[0])
    with pytest.raises(ValueError, match="Unknown statistic"):
        bootstrap_ci(np.ones(3), "mode", 0.9, 10, 0)


@pytest.mark.slow  # the whole study on the tiny model: ~40 s CPU (imports, 4 probe fits, 4 PNGs, W&B)
def test_run_patching_writes_every_map(tiny_adapter, tmp_path):
    paths, neutral = write_probe_sets(tmp_path)
    gate = GateSettings(
        layers=(1,),
        strategies=("one_to_all",),
        poles=("negative",),
        alphas=(2.0,),
        eval_set=str(neutral),
        n_prompts=2,
        head_steps=6,
        split=(0.5, 0.25, 0.25),
    )
    settings = PatchSettings(
        concepts=(str(paths["tempo"]),),
        n_pairs=2,
        site_kinds=("resid_post",),
        windows=("0-10", "0-end"),
        n_boot=50,
        min_gap=0.0,
        gate=gate,
    )
    generation = GenerationSettings(seconds=0.5, top_k=20, batch_size=16)
    summary = run_patching(
        tiny_adapter, tmp_path / "out", settings, generation, MetricsSettings(), progress=lambda m: None
    )
    out = tmp_path / "out"
    for stem in (
        "patching_toy_tempo_resid_post_attribute",
        "patching_toy_tempo_resid_post_readout",
        "head_probes_toy_tempo",
        "gate_tradeoff",
    ):
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG", stem
    rows = summary["maps"]
    assert len(rows) == 2 * 4 * 2  # measures x layers x windows
    whole = [r for r in rows if r["measure"] == "readout" and r["window"] == "0-end" and r["layer"] == 3]
    assert all(r["effect"] == pytest.approx(1.0) for r in whole)  # the last layer over all steps: the source
    assert {(r["mode"], r["alpha"]) for r in summary["tradeoff"]} == {
        ("constant", 2.0),
        ("stop", 2.0),
        ("proportional", 2.0),
    }
    assert len(summary["heads"]["toy_tempo"]["heads"]) == 16
    assert json.loads((out / "summary.json").read_text())["files"]
    run = wandb.init(mode="offline", dir=str(tmp_path), project="steerlit-test")
    try:
        log_patching(summary, run)
    finally:
        run.finish()
    images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/patching/*.png"))
    assert len(images) == 4


def test_constant_distance_at_matched_effect_walks_the_curve_in_alpha_order():
    curve = [(0.2, 10.0), (0.1, 30.0), (0.4, 50.0)]  # effects not monotone in alpha
    assert constant_distance_at(0.1, curve) == pytest.approx(5.0)  # first reached on the way to alpha 1
    assert constant_distance_at(0.3, curve) == pytest.approx(30.0 + 20.0 * 0.2 / 0.3)
    assert constant_distance_at(-0.1, curve) == 0.0 and np.isnan(constant_distance_at(0.5, curve))
