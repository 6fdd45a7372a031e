"""A cheap study on the tiny model with the ``add`` operator (so α is in units of the direction), shared by the
tests of the perturbation size and of the joined per-layer comparison."""

import pytest

from steerlit.config import compose
from steerlit.study.layout import RunLayout
from steerlit.study.run import run_study

ADD_RUN = [
    "logger=none",
    "probe=tempo_timbre",
    "probe.max_per_pole=12",
    "fit.methods=[diffmean,random]",
    "steer.methods=[diffmean]",
    "steer.layers=[1,2]",
    "steer.strategies=[one_to_one]",
    "steer.alphas=[-0.5,0,0.5]",
    "steer.operator=add",
    "steer.n_prompts=1",
    "steer.seconds=0.3",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session")
def add_run(tmp_path_factory, tiny_model_dir):
    """(RunLayout, summary rows) of the cheap study: diffmean and the random control at layers 1 and 2."""
    out = tmp_path_factory.mktemp("add_run")
    settings = compose([*ADD_RUN, f"model={tiny_model_dir}", f"output_dir={out}", "run_name=add"])
    return RunLayout(out / "add"), run_study(settings)
