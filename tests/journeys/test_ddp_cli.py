"""Multi-GPU from the CLI (issue 19), on CPU: `steerlit run trainer.strategy=S trainer.devices=2` under each of
Lightning's launchers: ``ddp`` re-runs the command line per rank (as on GPUs), ``ddp_spawn`` and ``ddp_fork`` start
the ranks from the first process. One run folder, results equal to one process (in bfloat16)."""

import csv
import os
import subprocess
import sys

import pytest

from steerlit.config import compose

CHEAP = [
    "logger=none",
    "model.dtype=bfloat16",
    "probe=tempo_timbre",
    "probe.max_per_pole=4",
    "fit.methods=[diffmean,regression]",
    "fit.probe.max_epochs=1",
    "steer.methods=[diffmean]",
    "steer.alphas=[-1,0,1]",
    "steer.n_prompts=2",
    "steer.seconds=0.3",
    "trainer.enable_progress_bar=false",
]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2"]


def steerlit_run(args, env_extra=None, timeout=500):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "steerlit.cli", "run", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def metrics(folder):
    with open(folder / "metrics.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["key"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir):
    """The metrics of the cheap study in one process (what every launcher must reproduce), measured in that
    process as DDP ranks measure theirs (the measuring pool gives the same values: tests/engines/test_runner.py)."""
    out = tmp_path_factory.mktemp("one")
    one = steerlit_run(
        [*CHEAP, "metrics.workers=0", f"model={tiny_model_dir}", f"output_dir={out}", "run_name=one"]
    )
    assert one.returncode == 0, one.stderr[-3000:]
    return metrics(out / "one")


def assert_one_folder_equal_to_one_process(done, out, one_process):
    """A finished multi-process run wrote one (default, timestamped) folder for both ranks with the metrics of one
    process."""
    assert done.returncode == 0, done.stderr[-3000:]
    folders = list(out.iterdir())  # the default (timestamped) name: one folder for both ranks
    assert len(folders) == 1, folders
    assert (folders[0] / "summary.csv").exists()
    got, want = metrics(folders[0]), one_process
    assert [r["codes_sha1"] for r in got] == [r["codes_sha1"] for r in want]
    drop = {"wav"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in got] == [
        {k: v for k, v in r.items() if k not in drop} for r in want
    ]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_ddp_cli_makes_one_folder_equal_to_one_process(strategy, tmp_path, tiny_model_dir, one_process):
    base = [*CHEAP, f"model={tiny_model_dir}"]
    two = steerlit_run([*base, *DDP, f"trainer.strategy={strategy}", f"output_dir={tmp_path / 'ddp'}"])
    assert_one_folder_equal_to_one_process(two, tmp_path / "ddp", one_process)


@pytest.mark.slow
def test_ddp_cpu_twice_on_a_fresh_numba_cache_makes_one_folder_equal_to_one_process(
    tmp_path, tiny_model_dir, one_process
):
    """``trainer=ddp_cpu`` (Lightning's ``ddp`` launcher, which re-runs the command line per rank as on GPUs),
    twice in a row on a fresh numba cache folder: both runs complete, each equal to one process."""
    assert compose(["trainer=ddp_cpu"]).trainer.strategy == "ddp"
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        done = steerlit_run([*CHEAP, f"model={tiny_model_dir}", "trainer=ddp_cpu", f"output_dir={out}"], env)
        assert_one_folder_equal_to_one_process(done, out, one_process)


def test_sigterm_stops_the_run_with_143_and_a_resume_line(tmp_path, tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    cmd = [
        sys.executable,
        "-m",
        "steerlit.cli",
        "run",
        *CHEAP,
        f"model={tiny_model_dir}",
        f"output_dir={tmp_path}",
        "run_name=stopme",
        "probe.max_per_pole=null",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "caching" in line:
            proc.terminate()
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "resume with: steerlit run run_name=stopme" in err
    assert not (tmp_path / "stopme" / "summary.csv").exists()
