"""Journeys (issue 23): a refused rerun writes nothing, a failed first batch never locks the folder, and a
truncated config.yaml gets one message naming the file and the fix."""

import shutil
import signal
import subprocess
import sys
import time

import pytest
from support.journeys import TINY_TESTBED, cli_env, steerlit, tree_hashes

from steerlit.cli import main
from steerlit.study.launch import LOCK_FILE


def copy_run(finished, tmp_path):
    target = tmp_path / "runs" / finished.folder.name
    shutil.copytree(finished.folder, target)
    return target


def without_lock(hashes: dict) -> dict:
    return {k: v for k, v in hashes.items() if k != LOCK_FILE}  # the lock file holds the last holder's pid


@pytest.mark.slow
def test_a_refused_rerun_writes_nothing(finished_run, tmp_path, capsys):
    """Medium 5: a rerun with other grid settings is refused before any file changes (config.yaml included)."""
    run = copy_run(finished_run, tmp_path)
    before = without_lock(tree_hashes(run))
    rc = main(["run", *TINY_TESTBED, f"output_dir={run.parent}", "run_name=R", "steer.seconds=0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds grid results generated with other settings" in err and "steer.seconds" in err
    assert without_lock(tree_hashes(run)) == before


@pytest.mark.slow
def test_a_truncated_config_yaml_names_the_file_and_the_fix(finished_run, tmp_path, capsys):
    """Low 11: ``fit --run R`` / ``steer --run R`` on a run whose config.yaml was cut off."""
    run = copy_run(finished_run, tmp_path)
    config = run / "config.yaml"
    text = config.read_bytes()
    for cut in (text[: len(text) // 2], text[: text.rindex(b"\ntrainer:") + 1]):  # mid-line, at a section
        config.write_bytes(cut)
        for command in ("fit", "steer"):
            assert main([command, "--run", str(run)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and str(config) in err and "truncated or damaged" in err
            assert f"steerlit run run_name=R output_dir={run.parent}" in err


@pytest.mark.slow
def test_a_first_batch_killed_does_not_lock_the_folder(tmp_path):
    """Medium 5: a run killed in its first grid batch (settings.json written, no row) takes corrected settings."""
    env, runs = cli_env(tmp_path), tmp_path / "runs"
    first = [*TINY_TESTBED, f"output_dir={runs}", "run_name=R"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "steerlit.cli", "run", *first, "steer.seconds=8"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = runs / "R" / "settings.json"
    deadline = time.monotonic() + 600
    while not settings.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert settings.exists()  # the grid had started
    results = runs / "R" / "results.jsonl"
    assert not results.exists() or not results.read_text().strip(), "killed before the first batch committed"
    done = steerlit(["run", *first, "steer.seconds=0.5"], env, tmp_path)
    assert (runs / "R" / "summary.csv").exists(), done.stderr[-2000:]
