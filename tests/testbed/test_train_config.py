"""Testbed training configs: only known keys, and a typo fails before any work."""

import pytest
from omegaconf import OmegaConf

from steerlit.testbed.train import main
from steerlit.testbed.train_config import check_config, given_options


def test_testbed_configs_hold_only_known_keys_and_typos_fail_before_work(tmp_path):
    for path in ("configs/testbed/default.yaml", "configs/testbed/smoke.yaml"):
        check_config(OmegaConf.load(path))
    run_dir = tmp_path / "run"
    for override, hint in (("codec.w_centroidd=2", "w_centroid"), ("+codec.w_centroid=2", "+codec")):
        with pytest.raises(ValueError, match="unknown testbed config key") as err:
            main(["--config", "configs/testbed/smoke.yaml", f"run_dir={run_dir}", override])
        assert hint in str(err.value)
    assert not run_dir.exists()  # nothing written


def test_given_options_are_the_keys_a_section_sets_as_plain_values():
    section = OmegaConf.create({"w_l1": 2.0, "stft_fft_sizes": [256, 512], "lr": 1e-3})
    options = given_options(section, "w_l1", "stft_fft_sizes", "w_mel")
    assert options == {"w_l1": 2.0, "stft_fft_sizes": [256, 512]} and type(options["stft_fft_sizes"]) is list
