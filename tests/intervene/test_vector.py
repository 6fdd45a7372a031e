"""SteeringVector: steering plain HF ``generate`` gives exactly what ``Steering`` on the adapter gives."""

import math

import pytest
import torch
from torch import nn
from transformers import StoppingCriteriaList

from steerlit.directions.io import DirectionFileError, DirectionSet, save_directions
from steerlit.engines.hf import codes_from_sequences
from steerlit.engines.sampling import SequenceCapture
from steerlit.intervene.injection import LAYER_STRATEGIES, inject
from steerlit.intervene.schedules import make_schedule
from steerlit.intervene.steer import Intervention, Steering, SteeringError
from steerlit.intervene.vector import SteeringVector, adapter_for

PROMPTS = ["a fast techno track", "slow jazz piano"]
STEPS = 20


def random_vector(hidden, seed, norm=10.0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(hidden, generator=g)
    return v / v.norm() * norm


def greedy_codes(model, inputs):
    """Greedy CFG decoding through plain HF ``generate``: codes (B, K, F)."""
    capture = SequenceCapture()
    with torch.no_grad():
        model.generate(
            **inputs,
            max_new_tokens=STEPS,
            do_sample=False,
            guidance_scale=3.0,
            stopping_criteria=StoppingCriteriaList([capture]),
        )
    return codes_from_sequences(capture.sequences, model.decoder.num_codebooks)


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    "strategy, options",
    [
        ("one_to_all", {}),
        ("one_to_one", {}),
        (
            "one_to_all",
            {"operator": "norm_add", "half": "cond", "schedule": {"kind": "exp_decay", "rate": 0.1}},
        ),
    ],
)
def test_apply_on_plain_generate_equals_steering_on_the_adapter(tiny_adapter, strategy, options):
    model, inputs = tiny_adapter.model, tiny_adapter.tokenize(PROMPTS)
    alpha = 0.5 if options.get("operator") == "norm_add" else 4.0
    vec = SteeringVector(random_vector(tiny_adapter.hidden_size, 0), layer=1, method="diffmean")
    with vec.apply(model, alpha=alpha, strategy=strategy, **options):
        steered = greedy_codes(model, inputs)
    sites = inject(strategy, {"resid_post.1": vec.vector}, [1], tiny_adapter.num_layers)
    schedule = make_schedule(options.get("schedule", "constant"))
    iv = Intervention(
        sites,
        alpha=alpha,
        operator=options.get("operator", "add"),
        schedule=schedule,
        half=options.get("half", "both"),
    )
    with Steering(tiny_adapter, [iv]):
        reference = greedy_codes(model, inputs)
    with vec.apply(tiny_adapter, alpha=alpha, strategy=strategy, **options):  # an adapter works too
        via_adapter = greedy_codes(model, inputs)
    assert torch.equal(steered, reference)
    assert torch.equal(via_adapter, reference)
    assert not torch.equal(steered, greedy_codes(model, inputs))  # the steering did something


def test_alpha_zero_is_identical_to_no_steering(tiny_adapter):
    model, inputs = tiny_adapter.model, tiny_adapter.tokenize(PROMPTS)
    base = greedy_codes(model, inputs)
    vec = SteeringVector(random_vector(tiny_adapter.hidden_size, 1), layer=2)
    for strategy in LAYER_STRATEGIES:
        with vec.apply(model, alpha=0.0, strategy=strategy):
            assert torch.equal(greedy_codes(model, inputs), base), strategy


def test_hooks_are_removed_after_the_block_and_after_an_exception(tiny_adapter):
    model, inputs = tiny_adapter.model, tiny_adapter.tokenize(PROMPTS[:1])
    before = all_hooks(model)
    vec = SteeringVector(random_vector(tiny_adapter.hidden_size, 2), layer=0)
    with vec.apply(model, alpha=2.0) as steering:
        assert isinstance(steering, Steering)
        assert all_hooks(model) > before
        greedy_codes(model, inputs)
    assert all_hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"), vec.apply(model, alpha=2.0):
        assert all_hooks(model) > before
        raise RuntimeError("boom")
    assert all_hooks(model) == before


def test_arithmetic_keeps_site_method_and_metadata():
    vec = SteeringVector(
        torch.tensor([1.0, -2.0, 3.0]), layer=3, kind="mlp_out", method="pca", metadata={"c": "x"}
    )
    for derived, expected in [
        (-vec, [-1.0, 2.0, -3.0]),
        (vec * 2, [2.0, -4.0, 6.0]),
        (2 * vec, [2.0, -4.0, 6.0]),
    ]:
        assert torch.equal(derived.vector, torch.tensor(expected))
        assert (derived.site, derived.method, derived.metadata) == ("mlp_out.3", "pca", {"c": "x"})
    assert torch.equal((vec / 2).vector, torch.tensor([0.5, -1.0, 1.5]))
    assert vec.hidden_size == 3 and "pca at mlp_out.3" in repr(vec)
    with pytest.raises(TypeError):
        vec * "2"
    with pytest.raises(ZeroDivisionError):
        vec / 0


def test_direction_set_vector_and_load(tmp_path):
    vectors = {("diffmean", f"resid_post.{i}"): random_vector(32, i) for i in range(4)}
    path = save_directions(tmp_path / "d.safetensors", vectors, model_id="tiny", concept="tempo")
    vec = DirectionSet.load(path).vector("diffmean", layer=2)
    assert torch.equal(vec.vector, vectors[("diffmean", "resid_post.2")])
    assert (vec.site, vec.method, vec.metadata["concept"]) == ("resid_post.2", "diffmean", "tempo")
    with pytest.raises(DirectionFileError, match="regression"):
        DirectionSet.load(path).vector("regression", layer=2)
    with pytest.raises(DirectionFileError, match="attn_out.2"):
        DirectionSet.load(path).vector("diffmean", layer=2, kind="attn_out")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strategy": "all_to_all"}, "Unknown injection strategy 'all_to_all'; use one of"),
        ({"operator": "mul"}, "Unknown steering operator 'mul'"),
        ({"half": "first"}, "Unknown CFG half policy 'first'"),
        ({"schedule": "sometimes"}, "Unknown schedule 'sometimes'"),
        ({"alpha": math.nan}, "alpha=nan is not a finite number"),
    ],
)
def test_bad_options_raise_one_clear_error_before_any_hook(tiny_adapter, options, message):
    vec = SteeringVector(random_vector(tiny_adapter.hidden_size, 3), layer=1)
    before = all_hooks(tiny_adapter.model)
    with pytest.raises(SteeringError, match=message):
        vec.apply(tiny_adapter.model, **options)
    assert all_hooks(tiny_adapter.model) == before


def test_vectors_that_do_not_fit_the_model_are_refused(tiny_adapter):
    model = tiny_adapter.model
    with pytest.raises(SteeringError, match="shape \\(16,\\), but the model's site has hidden size 32"):
        SteeringVector(torch.ones(16), layer=1).apply(model)
    with pytest.raises(SteeringError, match="comes from resid_post.7, but the model has 4 layers"):
        SteeringVector(torch.ones(32), layer=7).apply(model)
    with pytest.raises(SteeringError, match="NaN or inf"):
        SteeringVector(torch.tensor([1.0, math.nan]), layer=0)
    with pytest.raises(SteeringError, match="one \\(H,\\) tensor"):
        SteeringVector(torch.ones(2, 32), layer=0)
    with pytest.raises(SteeringError, match="Unknown site kind"):
        SteeringVector(torch.ones(32), layer=0, kind="resid_pre")
    with pytest.raises(SteeringError, match="MusicgenForConditionalGeneration"):
        SteeringVector(torch.ones(32), layer=0).apply(nn.Linear(32, 32))
    with pytest.raises(SteeringError, match="MusicgenForConditionalGeneration"):
        SteeringVector(torch.ones(32), layer=0).apply(model.decoder)  # the decoder alone is not enough


def test_adapter_for_wraps_a_plain_model_and_keeps_an_adapter(tiny_adapter):
    assert adapter_for(tiny_adapter) is tiny_adapter
    wrapped = adapter_for(tiny_adapter.model)
    assert wrapped.model is tiny_adapter.model
    assert (wrapped.hidden_size, wrapped.num_layers) == (tiny_adapter.hidden_size, tiny_adapter.num_layers)
