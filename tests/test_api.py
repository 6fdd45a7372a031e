"""The package face: ``steerlit.__all__``, a light ``import steerlit``, and the README's Python API section runs."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import steerlit

REPO = Path(steerlit.__file__).resolve().parents[1]


def run_study_is_merged() -> bool:
    """``run_study`` lands in steerlit/study/run.py with the study redesign; until then that module does not
    define it (and does not even import: it still uses the removed ``config.as_container``). Remove at merge."""
    try:
        return hasattr(importlib.import_module("steerlit.study.run"), "run_study")
    except ImportError:
        return False


def test_every_public_name_resolves_to_its_defining_module():
    for name in steerlit.__all__:
        if name == "run_study" and not run_study_is_merged():
            continue  # until the study redesign lands (the study helper's branch defines it)
        value = getattr(steerlit, name)
        assert value is not None, name
        if name != "__version__":
            assert value.__module__.startswith("steerlit."), name
    assert steerlit.SteeringVector is importlib.import_module("steerlit.intervene.vector").SteeringVector
    assert steerlit.DirectionSet is importlib.import_module("steerlit.directions.io").DirectionSet
    assert set(steerlit.__all__) <= set(dir(steerlit))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        steerlit.not_a_name  # noqa: B018


def test_import_steerlit_does_not_import_torch():
    code = (
        "import sys, steerlit\n"
        "heavy = [m for m in ('torch', 'transformers', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert steerlit.__version__\n"
        "assert 'SteeringVector' in dir(steerlit)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def python_api_blocks() -> list[str]:
    """The ```python blocks of the README's "## Python API" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_section_runs(tmp_path, monkeypatch):
    blocks = python_api_blocks()
    assert len(blocks) == 2 and "vec.apply(model" in blocks[0] and "run_study(" in blocks[1]
    (tmp_path / "checkpoints").symlink_to(REPO / "checkpoints")  # the blocks run from a repository root
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        if "run_study" in code and not run_study_is_merged():
            continue  # until the study redesign lands: then this block runs too
        namespace = {"__name__": f"readme_python_api_{i}"}
        exec(compile(code, f"README.md (Python API block {i})", "exec"), namespace)
        if i == 0:
            faster, slower = namespace["faster"], namespace["slower"]
            assert faster.shape[:2] == (1, 1) and faster.shape == slower.shape
            assert namespace["vec"].hidden_size == namespace["adapter"].hidden_size == 128
