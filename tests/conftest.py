"""Shared fixtures: a tiny random MusicGen saved with save_pretrained and loaded back through load_model."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "steerlit-numba-cache"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # one numba cache per pytest-xdist worker (and its subprocesses)
    os.environ["NUMBA_CACHE_DIR"] += "-" + os.environ["PYTEST_XDIST_WORKER"]
    # Two workers share the cores: one intra-op thread each, in their CLI subprocesses and DDP ranks too
    # (oversubscribed OpenMP threads spin and made the grid 15-20x slower on a loaded 2-core machine).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from steerlit.models.loading import load_model  # noqa: E402
from steerlit.models.tiny import build_tiny_musicgen  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder written by save_pretrained: 4 layers × 32 hidden, 4 codebooks of 64, EnCodec 32 kHz / 50 Hz."""
    return build_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen"), seed=0)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(autouse=True)
def restore_environment():
    """Undo environment changes made behind monkeypatch's back (W&B's agent sets ``WANDB_RUN_ID`` and
    ``WANDB_SWEEP_PARAM_PATH`` in ``os.environ``; a later ``wandb.init`` would merge that sweep's parameters)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


PROMPTS = ["a fast techno track", "slow jazz piano", "bright acoustic guitar", "dark ambient drone"]
