"""Validation first (issue 23): bad settings fail with one message before any folder or model; dry runs."""

import re
from pathlib import Path

import pytest

from steerlit.cli import main
from steerlit.study.launch import RunLock

BASE = ["logger=none", "steer.n_prompts=2", "steer.seconds=1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steer.alphas=[0,nan]", "steer.alphas must be finite"),
        ("steer.alphas=[0,inf]", "steer.alphas must be finite"),
        ("steer.batch_size=0", "steer.batch_size must be > 0"),
        ("steer.temperature=0", "steer.temperature must be > 0"),
        ("steer.n_prompts=0", "steer.n_prompts must be >= 1"),
        ("steer.n_prompts=-1", "steer.n_prompts must be >= 1"),
        ("steer.schedule={kind:foo}", "space after each colon"),
        ("steer.schedule={kind: foo}", "Unknown schedule 'foo'"),
        ("steer.schedule={kind: exp_decay, nosuch: 1}", "Bad parameters"),
        ("run_name=../../escape", "points outside output_dir"),
        ("steer.alphas=5", "it takes a list, not one value"),
        ("extract.position=mean", "use extract.position=first"),
    ],
)
def test_bad_setting_fails_before_any_folder(tmp_path, capsys, override, message):
    rc = main(["run", *BASE, f"output_dir={tmp_path / 'runs'}", override])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "escape").exists()


def test_steer_layers_must_be_extracted(tmp_path, capsys):
    rc = main(["run", *BASE, f"output_dir={tmp_path}", "extract.layers=[0]", "steer.layers=[1]"])
    assert rc == 2 and "steer.layers [1] are not extracted" in capsys.readouterr().err


def test_concept_without_attribute_fails_first(tmp_path, capsys):
    probe = tmp_path / "loud.yaml"
    text = (Path(__file__).parents[2] / "probes" / "testbed_tempo.yaml").read_text()
    probe.write_text(re.sub(r"(?m)^name: .*$", "name: loudness", text))
    rc = main(["run", *BASE, f"output_dir={tmp_path / 'runs'}", f"probe.concepts=[{probe}]"])
    err = capsys.readouterr().err
    assert rc == 2 and "metrics.attributes" in err
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_the_grid_without_weights(tmp_path, capsys):
    rc = main(["run", "--dry-run", "model=musicgen_small", f"output_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 0 and "rows" in out
    assert not any(tmp_path.iterdir())


def test_a_locked_run_folder_refuses_a_second_run(tmp_path, capsys):
    folder = tmp_path / "busy"
    lock = RunLock(folder)
    try:
        rc = main(["run", *BASE, f"output_dir={tmp_path}", "run_name=busy"])
    finally:
        lock.release()
    assert rc == 2 and "is in use by another run" in capsys.readouterr().err
    assert not (folder / "config.yaml").exists()


PROBES = Path(__file__).parents[2] / "probes"


def test_two_probe_sets_with_one_name_fail_first(tmp_path, capsys):
    """Medium 2: two probe sets named alike would write one folder; refused before any folder."""
    text = (PROBES / "testbed_tempo.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    concepts = f"probe.concepts=[{tmp_path / 'a.yaml'},{tmp_path / 'b.yaml'}]"
    rc = main(["run", *BASE, f"output_dir={tmp_path / 'runs'}", concepts])
    err = capsys.readouterr().err
    assert rc == 2 and "are both named 'testbed_tempo'" in err and "its own 'name:'" in err
    assert not (tmp_path / "runs").exists()


def test_a_probe_prompt_in_the_evaluation_set_fails_first(tmp_path, capsys):
    """Medium 1: evaluation leakage (a probe prompt that is also an evaluation prompt) is refused."""
    leaked = "electric organ with a swing groove, driving"  # a testbed_tempo prompt
    assert leaked in (PROBES / "testbed_tempo.yaml").read_text()
    eval_file = tmp_path / "leaky_neutral.yaml"
    eval_file.write_text((PROBES / "testbed_neutral.yaml").read_text().rstrip("\n") + f"\n- {leaked}\n")
    args = [
        f"output_dir={tmp_path / 'runs'}",
        "probe.concepts=[testbed_tempo]",
        f"probe.eval_set={eval_file}",
    ]
    rc = main(["run", *BASE, *args])
    err = capsys.readouterr().err
    assert rc == 2 and "also appears in the evaluation set" in err and "held out" in err
    assert not (tmp_path / "runs").exists()


def test_a_clip_shorter_than_one_frame_fails_before_any_folder(tmp_path, capsys):
    """Medium 4: ``steer.seconds`` that leaves no audio after the codebook delay is refused before any work."""
    rc = main(["run", *BASE, f"output_dir={tmp_path / 'runs'}", "steer.seconds=0.01"])
    err = capsys.readouterr().err
    assert rc == 2 and "steer.seconds=0.01 is shorter than one frame" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_an_unknown_attribute_name_fails_first(tmp_path, capsys):
    """Medium 7: ``metrics.attributes.<concept>=nosuch_attr`` gave an all-NaN summary with rc 0."""
    args = [f"output_dir={tmp_path / 'runs'}", "probe.concepts=[testbed_tempo]"]
    rc = main(["run", *BASE, *args, "metrics.attributes.testbed_tempo=nosuch_attr"])
    err = capsys.readouterr().err
    assert rc == 2 and "'nosuch_attr' is not an attribute steerlit measures" in err and "'bpm'" in err
    assert not (tmp_path / "runs").exists()


def test_a_broken_later_probe_file_fails_first(tmp_path, capsys):
    """Medium 4: the contents of the second probe file are checked before the first concept is extracted."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\npoles: {positive: a, negative: b}\nprompts: {a: [x]}\n")
    rc = main(["run", *BASE, f"output_dir={tmp_path / 'runs'}", f"probe.concepts=[testbed_tempo,{broken}]"])
    err = capsys.readouterr().err
    assert rc == 2 and str(broken) in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
