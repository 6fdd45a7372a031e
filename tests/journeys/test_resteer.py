"""Journey: re-steering a finished run writes a new folder and never changes the source run."""

import hashlib
import json
import shutil

import pytest
from support.journeys import cli_env, steerlit, tree_hashes


@pytest.mark.slow
def test_steer_out_leaves_the_source_run_byte_identical(finished_run, tmp_path):
    env = cli_env(tmp_path)
    source = shutil.copytree(finished_run.folder, tmp_path / "runs" / "R")  # a TINY_TESTBED run
    assert (source / "summary.csv").exists()
    before = tree_hashes(source)

    new = tmp_path / "elsewhere" / "NEW"
    changed = ["steer.seconds=0.75", "steer.top_k=10", "steer.guidance_scale=2.0", "steer.temperature=0.9"]
    done = steerlit(["steer", "--run", str(source), "--out", str(new), *changed], env, tmp_path)
    assert tree_hashes(source) == before
    for table in ("summary.csv", "per_alpha.csv", "metrics.csv", "config.yaml"):
        assert (new / table).exists(), table
    assert str(new) in done.stdout
    provenance = json.loads((new / "source.json").read_text())
    assert provenance["source_run"] == str(source.resolve())
    data = (source / "testbed_tempo" / "directions.safetensors").read_bytes()
    assert provenance["directions"]["testbed_tempo"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (new / "testbed_tempo" / "directions.safetensors").read_bytes() == data
    config = (new / "config.yaml").read_text()
    assert "source_run" in config and "top_k: 10" in config and "seconds: 0.75" in config

    refused = steerlit(["steer", "--run", str(source), "--out", str(new)], env, tmp_path, check=False)
    assert refused.returncode != 0 and "--out" in refused.stderr
    assert tree_hashes(source) == before
