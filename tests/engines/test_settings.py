"""GenerationSettings: the generation fields alone, and on the HF engine for hooked generations."""

from steerlit.engines.settings import GenerationSettings
from steerlit.study.settings import SteerSettings


def test_on_hf_engine_keeps_the_sampling_fields_and_drops_grid_axes():
    steer = SteerSettings(
        seconds=3.0, guidance_scale=2.0, top_k=50, batch_size=4, engine="fast", seeds=(1, 2)
    )
    hf = steer.on_hf_engine()
    assert type(hf) is GenerationSettings and hf.engine == "hf"
    assert hf == GenerationSettings(seconds=3.0, guidance_scale=2.0, top_k=50, batch_size=4, seeds=(1, 2))
    assert steer.engine == "fast"  # the settings themselves are unchanged
