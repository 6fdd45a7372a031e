"""The shipped testbed checkpoint: loads by its short name, generates, and its timbre direction steers brightness."""

import numpy as np
import torch

from steerlit.data.probe_set import load_eval_prompts
from steerlit.directions.io import load_directions
from steerlit.generate.hf_engine import generate
from steerlit.intervene.injection import inject
from steerlit.intervene.steer import Intervention
from steerlit.metrics.brightness import spectral_centroid
from steerlit.models.loading import CHECKPOINTS_DIR, load_model


def test_shipped_testbed_steers_brightness_with_its_timbre_direction():
    adapter = load_model("testbed")
    assert adapter.model_id == "testbed" and adapter.sample_rate == 16000 and adapter.frame_rate == 50.0
    directions = load_directions(
        CHECKPOINTS_DIR / "testbed" / "directions" / "testbed_timbre.safetensors", adapter
    )
    prompts = load_eval_prompts("testbed_neutral")[:4]
    # Layer 1, one-to-one: alpha = +-1 moves the activations by one bright-dark gap (calibrated in the model card).
    vectors = inject("one_to_one", directions.for_method("diffmean"), [1], adapter.num_layers)
    medians = {}
    torch.set_num_threads(2)
    for alpha in (-1.0, 1.0):
        rows = [[Intervention(vectors, alpha)]] * len(prompts)
        out = generate(
            adapter,
            prompts,
            max_new_tokens=adapter.seconds_to_steps(2.0),
            seeds=[0] * len(prompts),
            steering=rows,
            top_k=50,
        )
        assert out.audio.shape[-1] >= 2 * adapter.sample_rate * 0.95
        medians[alpha] = float(
            np.median([spectral_centroid(a.numpy(), adapter.sample_rate) for a in out.audio])
        )
    assert medians[1.0] > 1.5 * medians[-1.0], medians  # the bright pole is brighter
