"""W&B tracking: a run folder is one W&B run, and the README's upload command takes every offline fragment of it
(one per invocation on the folder), in order of start time, into that run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.offline_runs import read_records

from steerlit.study.tracking import RUN_ID_FILE

README = Path(__file__).parents[2] / "README.md"
TWO_INVOCATIONS = """
import sys
from pathlib import Path
from steerlit.study.layout import RunLayout
from steerlit.study.settings import LoggerSettings
from steerlit.study.tracking import wandb_logger

layout = RunLayout(Path(sys.argv[1]))
for n in (3, 2):  # a run, then a resume of its folder
    with wandb_logger(LoggerSettings(mode="offline"), layout, {"n": n}) as logger:
        for i in range(n):
            logger.experiment.log({"x": 10 * n + i})
"""


def readme_sync_command() -> str:
    (command,) = re.findall(r"^wandb sync --id .*$", README.read_text(), flags=re.MULTILINE)
    return command


@pytest.mark.slow
def test_the_readme_sync_command_uploads_a_resumed_folder_into_its_one_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_RUN_ID", None)
    script = tmp_path / "two.py"
    script.write_text(TWO_INVOCATIONS)
    run = tmp_path / "runs" / "R"
    done = subprocess.run([sys.executable, str(script), str(run)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    fragments = sorted((run / "wandb" / "wandb").glob("offline-run-*"))  # the README command's glob
    assert len(fragments) == 2
    run_id = (run / "wandb" / RUN_ID_FILE).read_text().strip()
    starts, logged = [], []
    for fragment in fragments:
        records = read_records(fragment)
        (header,) = [r["run"] for r in records if r["type"] == "run"]
        assert header["run_id"] == run_id and header["resume"]
        starts.append(header["start_time"])
        history = [r["history"] for r in records if r["type"] == "history"]
        # wandb's own step counter (no explicit steps): the upload continues it from the run's last step
        assert [h["item"]["_step"] for h in history] == [h["step"].get("num", 0) for h in history]
        logged.append([h["item"]["x"] for h in history])
    assert starts == sorted(starts) and logged == [[30, 31, 32], [20, 21]]  # glob order = start order
    command = readme_sync_command().replace("<name>", "R") + " --dry-run"
    listed = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "Would sync 2 run(s)" in listed.stderr
    lines = [line for line in listed.stderr.splitlines() if ".wandb" in line]
    assert [Path(line.split()[-1]).parent.name for line in lines] == [f.name for f in fragments]
