import pytest
import torch

from steerlit.intervene.injection import (
    best_heads,
    explicit_map,
    gram_schmidt,
    inject,
    one_to_all,
    one_to_one,
    top_heads,
)

DIRS = {f"resid_post.{i}": torch.full((4,), float(i)) for i in range(3)}


def test_one_to_one_and_one_to_all():
    m = one_to_one(DIRS, [0, 2])
    assert sorted(m) == ["resid_post.0", "resid_post.2"] and m["resid_post.2"][0] == 2
    m = inject("one_to_all", DIRS, [1], num_layers=3)
    assert sorted(m) == ["resid_post.0", "resid_post.1", "resid_post.2"]
    assert all(torch.equal(v, DIRS["resid_post.1"]) for v in m.values())
    assert sorted(one_to_all(DIRS["resid_post.0"], 3, targets=[1])) == ["resid_post.1"]


def test_explicit_map():
    m = explicit_map(DIRS, {"resid_post.2": ["resid_post.0", "mlp_out.1"]})
    assert torch.equal(m["mlp_out.1"], DIRS["resid_post.2"])
    with pytest.raises(ValueError, match="two sources"):
        explicit_map(DIRS, {"resid_post.0": ["resid_post.1"], "resid_post.2": ["resid_post.1"]})


def test_errors():
    with pytest.raises(ValueError, match="one source layer"):
        inject("one_to_all", DIRS, [0, 1], 3)
    with pytest.raises(ValueError, match="Unknown injection strategy"):
        inject("all_to_one", DIRS, [0], 3)
    with pytest.raises(ValueError, match="No direction for site"):
        one_to_one(DIRS, [5])


def test_gram_schmidt():
    a, b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0])
    oa, ob = gram_schmidt([a, b])
    assert torch.equal(oa, a)
    assert abs(float(oa @ ob)) < 1e-6
    torch.testing.assert_close(ob, torch.tensor([0.5, -0.5, 1.0]))


def test_top_heads_picks_the_most_accurate_heads():
    directions = {
        f"attn_head.{L}.{h}": torch.full((8,), float(L * 4 + h)) for L in range(2) for h in range(4)
    }
    accuracy = {s: 0.5 for s in directions} | {
        "attn_head.1.3": 0.9,
        "attn_head.0.2": 0.8,
        "attn_head.1.0": 0.8,
    }
    assert list(top_heads(directions, accuracy, 3)) == ["attn_head.1.3", "attn_head.0.2", "attn_head.1.0"]
    assert best_heads(accuracy | {"resid_post.0": 1.0}, 1) == ["attn_head.1.3"]  # heads only
    with pytest.raises(ValueError, match="only 8 head accuracies"):
        top_heads(directions, accuracy, 9)
    with pytest.raises(ValueError, match="per-head directions"):
        inject("top_heads", directions, [2], 2)
