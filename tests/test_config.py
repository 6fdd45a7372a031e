import dataclasses

import pytest

from steerlit.config import ConfigError, as_dict, check_layers, compose, to_yaml

EXPERIMENTS = [
    "alpha_sweep_tempo",
    "alpha_sweep_timbre",
    "layer_sweep_tempo",
    "layer_sweep_timbre",
    "strategy_tempo",
    "strategy_timbre",
    "probe_vs_diffmean_tempo",
    "probe_vs_diffmean_timbre",
    "smoke",
]


def test_defaults_and_overrides():
    default = compose([])
    assert default.model.name == "testbed"
    assert list(default.probe.concepts) == ["testbed_tempo", "testbed_timbre"]
    assert default.probe.eval_set == "testbed_neutral"
    cfg = compose(["steer.alphas=[-2,0,2]", "layers=[6,12]", "model=tiny", "probe=tempo_timbre"])
    assert list(cfg.steer.alphas) == [-2.0, 0.0, 2.0]
    assert list(cfg.steer.layers) == [6, 12]
    assert cfg.model.name == "tiny"
    assert list(cfg.probe.concepts) == ["tempo", "timbre"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.experiment == name
    concept = "timbre" if "timbre" in name else "tempo"
    if name != "smoke":
        assert list(cfg.probe.concepts) == [concept]
        assert cfg.model.name == "facebook/musicgen-small"  # the paper's prompt sets are MusicGen's
        assert compose([f"experiment={name}", "model=tiny"]).model.name == "tiny"


def test_strategy_experiment_compares_both():
    assert list(compose(["experiment=strategy_tempo"]).steer.strategies) == ["one_to_one", "one_to_all"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["steer.alphaz=[1]"], "Unknown config key 'steer.alphaz'"),
        (["nonsense=1"], "Unknown config key 'nonsense'"),
        (["steer.alphas=[]"], "steer.alphas is empty"),
        (["steer.seconds=abc"], "Bad value for config key 'steer.seconds'"),
        (["probe.concepts=[no_such_set]"], "no_such_set"),
        (["experiment=nope"], "Experiment 'nope' not found"),
        (["steer.operator=mul"], r"'steer.operator': Invalid value 'mul', expected one of \['add'"),
        (["steer.methods=[svm]"], r"'steer.methods' \(item 0, 'svm'\).*expected one of \['diffmean'"),
        (
            ["steer.methods=[diffmean,nope]"],
            r"'steer.methods' \(item 1, 'nope'\).*expected one of \['diffmean'",
        ),
        (
            ["steer.alphas=[1,x]"],
            r"'steer.alphas' \(item 1, 'x'\): Value 'x' of type 'str' could not be converted",
        ),
        (["fit.methods=[diffmean]", "steer.methods=[logistic]"], "not fitted"),
        (["steer.strategies=[all_to_one]"], r"'steer.strategies' \(item 0, 'all_to_one'\).*'one_to_one'"),
        (["layers=[-1]"], "negative layer"),
        (["steer.alphas"], "not key=value"),
    ],
)
def test_bad_configs_fail_with_one_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(overrides)


def test_layers_out_of_range_against_the_model():
    cfg = compose(["layers=[2,7]"])
    with pytest.raises(ConfigError, match=r"layers \[7\] out of range: the model has 4 layers"):
        check_layers(cfg, 4)
    check_layers(compose(["layers=[3]"]), 4)


def test_group_choices_on_the_command_line():
    cfg = compose(["logger=none", "trainer=ddp_cpu", "model=testbed"])
    assert (cfg.logger.kind, cfg.trainer.devices, cfg.trainer.strategy, cfg.model.name) == (
        "none",
        2,
        "ddp",
        "testbed",
    )
    assert compose(["model=/models/musicgen-small"]).model.name == "/models/musicgen-small"
    with pytest.raises(
        ConfigError, match=r"No logger config named 'nada'; choose one of \['none', 'wandb'\]"
    ):
        compose(["logger=nada"])


def test_a_bad_list_item_in_a_config_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steer:\n  strategies: [one_to_one, sideways]\n")
    with pytest.raises(ConfigError, match=r"'steer.strategies' \(item 1, 'sideways'\)"):
        compose([], config_path=path)


def test_settings_are_frozen_and_round_trip_through_yaml(tmp_path):
    cfg = compose(["steer.alphas=[-1,1]", "run_name=x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert compose([], config_path=path) == cfg
    assert as_dict(cfg)["steer"]["alphas"] == [-1.0, 1.0]
