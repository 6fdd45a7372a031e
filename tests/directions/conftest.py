"""Fixtures for direction tests: a small probe set and one shared activation cache of the tiny model.

The tests run torch with one intra-op thread (restored afterwards): on a shared 2-core machine, two
OpenMP threads per process were measured 10x slower under load, and DDP ranks use one thread each.
"""

from __future__ import annotations

import pytest
import torch

from steerlit.data.probe_set import ProbeSet, load_probe_set
from steerlit.data.settings import ProbeSettings
from steerlit.directions.extraction import extract_activations
from steerlit.directions.settings import ExtractSettings
from steerlit.runtime import TrainerSettings

N_PER_POLE = 20
BATCH = 4
CPU = TrainerSettings(enable_progress_bar=False)


class one_thread:  # noqa: N801 (used like a function)
    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def small_probe_set() -> ProbeSet:
    """20 fast and 20 slow prompts of the shipped tempo set."""
    ps = load_probe_set("tempo")
    return ProbeSet(
        name=ps.name,
        description="test subset",
        positive=ps.positive,
        negative=ps.negative,
        positive_prompts=ps.positive_prompts[:N_PER_POLE],
        negative_prompts=ps.negative_prompts[:N_PER_POLE],
    )


@pytest.fixture(scope="session")
def cache_run(tmp_path_factory, tiny_adapter, small_probe_set):
    """A run folder with a complete prompt-source cache (1 process, shards of 4)."""
    run = tmp_path_factory.mktemp("run-cache")
    with one_thread():
        extract_activations(
            run, small_probe_set, tiny_adapter, ExtractSettings(batch_size=BATCH), ProbeSettings(), CPU
        )
    return run
