"""Journey: a wheel installed outside the repository ships configs/, probes/ and the testbed, and runs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.journeys import REPO, TINY_TESTBED, cli_env

NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "runs", "wandb", "build", "dist", "*.egg-info", "__pycache__"
)


def build_and_install(tmp_path: Path) -> Path:
    """Build a wheel from a copy of the checkout and install it with pip into a folder of its own."""
    source = shutil.copytree(REPO, tmp_path / "src", ignore=NOT_SHIPPED)
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True
    )
    (wheel,) = wheels.glob("steerlit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def run_installed(target: Path, args, cwd: Path, env) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(target / "bin" / "steerlit"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_wheel_installed_outside_the_repo_runs_config_and_a_tiny_study(tmp_path):
    target = build_and_install(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = cli_env(tmp_path, pythonpath=str(target))
    env.pop("STEERLIT_HOME", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import steerlit, steerlit.resources as r; print(steerlit.__file__, r.resource_dir('configs'))",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where

    printed = run_installed(target, ["config"], outside, env).stdout
    assert "testbed_tempo" in printed and "name: testbed" in printed

    study = [*TINY_TESTBED, "metrics.workers=1"]  # the measuring pool's spawned worker imports the wheel too
    run_installed(target, ["run", *study, "output_dir=runs", "run_name=installed"], outside, env)
    run = outside / "runs" / "installed"
    assert (run / "summary.csv").exists() and (run / "testbed_tempo" / "directions.safetensors").exists()
