"""The strategy of loops without gradients: one process as asked, several CPU processes as gloo ranks."""

from __future__ import annotations

import pytest

from steerlit.directions.ddp import NoWrapDDPStrategy, loop_strategy, num_processes
from steerlit.runtime import TrainerSettings


def test_num_processes():
    assert [num_processes(d) for d in (1, 2, "3", "0,1", [0, 1, 2], "auto", -1)] == [1, 2, 3, 2, 3, 1, 1]


@pytest.mark.parametrize("name", ["auto", "ddp", "ddp_fork", "ddp_spawn"])
def test_several_cpu_processes_get_the_no_wrap_strategy(name):
    strategy = loop_strategy(TrainerSettings(devices=2, strategy=name))
    assert isinstance(strategy, NoWrapDDPStrategy) and strategy.process_group_backend == "gloo"


def test_other_cases_keep_the_named_strategy():
    assert loop_strategy(TrainerSettings(devices=1, strategy="ddp")) == "ddp"
    assert loop_strategy(TrainerSettings(accelerator="gpu", devices=2)) == "auto"
    assert loop_strategy(TrainerSettings(devices=2, strategy="fsdp")) == "fsdp"


def test_a_loaded_model_cannot_go_to_spawned_ranks():
    with pytest.raises(ValueError, match="ModelSettings"):
        loop_strategy(TrainerSettings(devices=2, strategy="ddp_spawn"), shares_loaded_model=True)
    assert isinstance(loop_strategy(TrainerSettings(devices=2), shares_loaded_model=True), NoWrapDDPStrategy)
