"""Journey (issue 23, Low 12): a run folder is one W&B run, however often it is resumed."""

import pytest
from support.journeys import TINY_TESTBED, cli_env, steerlit
from support.offline_runs import read_records

from steerlit.study.tracking import RUN_ID_FILE


@pytest.mark.slow
def test_a_resumed_run_folder_logs_into_its_one_wandb_run(tmp_path):
    """Two invocations on one run folder (the second resumes it) give offline runs of one W&B run id, so the
    README's ``wandb sync runs/<name>/wandb/wandb/offline-run-*`` uploads one run per run folder."""
    env = {**cli_env(tmp_path), "WANDB_MODE": "offline"}
    env.pop("WANDB_RUN_ID", None)
    args = [
        "run",
        *[o for o in TINY_TESTBED if o != "logger=none"],
        f"output_dir={tmp_path / 'runs'}",
        "run_name=R",
    ]
    steerlit(args, env, tmp_path)
    steerlit(args, env, tmp_path)
    root = tmp_path / "runs" / "R"
    offline = sorted((root / "wandb" / "wandb").glob("offline-run-*"))  # the README's sync glob
    assert len(offline) == 2
    run_id = (root / "wandb" / RUN_ID_FILE).read_text().strip()
    ids = {next(r["run"]["run_id"] for r in read_records(d) if r["type"] == "run") for d in offline}
    assert ids == {run_id}
    assert all(d.name.endswith(f"-{run_id}") for d in offline)
