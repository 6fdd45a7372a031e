"""Each stage subcommand is one W&B run of its job type, and the artifacts chain extract → fit → steer.

The ``steerlit`` CLI runs in subprocesses with W&B offline; the runs are read back with wandb's own reader
(``wandb leet inspect``)."""

import json

import pytest
from support.journeys import TINY_TESTBED, cli_env, steerlit
from support.offline_runs import read_offline_run, read_records

from steerlit.study.jobs import artifact_names

WANDB_OFFLINE = [o for o in TINY_TESTBED if not o.startswith("logger=")] + [
    "logger=wandb",
    "logger.mode=offline",
]


def offline_runs(folder):
    """``{job_type: (run, records)}`` of the offline W&B runs under ``folder/wandb``."""
    runs = {}
    for path in sorted((folder / "wandb").glob("wandb/offline-run-*")):
        run = read_offline_run(path)
        assert run["job_type"] not in runs, f"two {run['job_type']} runs"
        runs[run["job_type"]] = (run, read_records(path))
    return runs


def logged_artifacts(records) -> dict[str, dict]:
    """``{name: metadata}`` of the stage artifacts a run logged (not the ``run_table`` ones W&B makes for tables)."""
    found = {}
    for record in records:
        artifact = record.get("artifact") if record.get("type") == "artifact" else None
        if artifact and artifact["type"] != "run_table":
            found[artifact["name"]] = json.loads(artifact.get("metadata") or "{}")
    return found


@pytest.mark.slow
def test_extract_fit_steer_generate_are_runs_of_their_job_types(tmp_path):
    env = cli_env(tmp_path)
    env["WANDB_MODE"] = "offline"
    env.pop("WANDB_API_KEY", None)
    run = tmp_path / "runs" / "R"
    steerlit(["extract", *WANDB_OFFLINE, f"output_dir={run.parent}", "run_name=R"], env, tmp_path)
    steerlit(["fit", "--run", str(run)], env, tmp_path)
    steerlit(["steer", "--run", str(run)], env, tmp_path)
    clip = tmp_path / "clips" / "steered.wav"
    directions = run / "testbed_tempo" / "directions.safetensors"
    generate = ["generate", "a calm folk song", "--out", str(clip), "--directions", str(directions)]
    steerlit([*generate, "--alpha", "1", "--seconds", "0.3", "logger.mode=offline"], env, tmp_path)

    runs = offline_runs(run)
    assert sorted(runs) == ["extract", "fit", "steer"]
    assert runs["extract"][0]["config"]["probe"]["concepts"] == ["testbed_tempo"]  # the resolved settings
    [activations] = artifact_names(["testbed_tempo"], "activations")
    [directions_name] = artifact_names(["testbed_tempo"], "directions")
    made = {job: logged_artifacts(records) for job, (_, records) in runs.items()}
    lineage = {"concept": "testbed_tempo", "stage": "activations", "inputs": []}
    assert made["extract"] == {activations: lineage}
    assert list(made["fit"]) == [directions_name] and made["fit"][directions_name]["inputs"] == [activations]
    assert made["steer"] == {"R-report": {"inputs": [directions_name]}}  # nothing re-logged
    assert runs["steer"][0]["summary"], "the grid's scalars are in the steer run's summary"

    [generated] = offline_runs(clip.parent).values()
    assert generated[0]["job_type"] == "generate" and generated[0]["config"]["generate"]["alpha"] == 1.0
    assert generated[0]["config"]["generate"]["directions"] == str(directions)
