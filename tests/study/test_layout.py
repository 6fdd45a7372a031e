"""The run folder's paths: one object owns them, and they are where `steerlit run` writes today."""

from pathlib import Path

from steerlit.study.layout import RunLayout


def test_paths_of_a_run_folder(tmp_path):
    layout = RunLayout.create(tmp_path, "myrun")
    root = tmp_path / "myrun"
    assert layout.root == root and root.is_dir() and layout.name == "myrun"
    assert layout.config == root / "config.yaml"
    assert layout.concept("tempo") == root / "tempo"
    assert layout.activations("tempo") == root / "tempo" / "activations"
    assert layout.directions("tempo") == root / "tempo" / "directions.safetensors"
    assert layout.probes("tempo") == root / "tempo" / "probes"
    assert layout.concept_plots("tempo") == root / "tempo" / "plots"
    assert (layout.samples, layout.results) == (root / "samples", root / "results.jsonl")
    assert (layout.metrics_csv, layout.per_alpha_csv, layout.summary_csv) == (
        root / "metrics.csv",
        root / "per_alpha.csv",
        root / "summary.csv",
    )
    assert layout.plots == root / "plots" and layout.wandb == root / "wandb"
    assert layout.epochs("epoch003") == root / "epochs" / "epoch003"
    assert layout.epochs("epoch003", "tempo") == root / "tempo" / "epochs" / "epoch003"


def test_evaluation_paths_final_and_per_stage(tmp_path):
    layout = RunLayout(tmp_path / "r")
    final = layout.evaluation()
    assert final.folder == layout.root and final.metrics_csv == layout.metrics_csv
    assert final.summary_csv == layout.summary_csv and final.results == layout.results
    assert final.plot == layout.plots / "attribute_vs_alpha.png"
    assert final.wav("abc") == layout.samples / "abc.wav"
    stage = layout.evaluation("epoch001", concept="timbre")
    assert stage.folder == layout.root / "timbre" / "epochs" / "epoch001"
    assert stage.per_alpha_csv == stage.folder / "per_alpha.csv"
    assert stage.plot == layout.concept_plots("timbre") / "attribute_vs_alpha_epoch001.png"
    assert layout.evaluation("epoch001").plot == layout.plots / "attribute_vs_alpha_epoch001.png"
    assert not (tmp_path / "r").exists(), "only create() makes folders"


def test_default_name_is_experiment_and_time(tmp_path):
    layout = RunLayout.create(tmp_path, None, "alpha_sweep")
    assert layout.name.startswith("alpha_sweep-") and Path(layout.root).parent == tmp_path
    assert RunLayout.create(tmp_path, None).name.startswith("run-")


def test_ranks_started_together_share_one_folder_named_by_the_job(tmp_path, monkeypatch):
    from steerlit.study.layout import RunLayout as Layout

    monkeypatch.delenv("STEERLIT_RUN_DIR", raising=False)
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
        assert Layout.create(tmp_path, None, "exp").name == "exp-jobabc"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("STEERLIT_RUN_DIR")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    import pytest

    from steerlit.study.settings import ConfigError

    with pytest.raises(ConfigError, match="pass run_name=NAME"):
        Layout.create(tmp_path, None, "exp")


def test_rerun_ranks_inherit_the_launchers_folder(tmp_path, monkeypatch):
    from steerlit.study.layout import RunLayout as Layout

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    first = Layout.create(tmp_path, None, None)  # the launching process: a timestamped name, exported
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's ddp launcher sets for the re-run command line
    assert Layout.create(tmp_path, None, None).root == first.root
