import pytest
import torch

from steerlit.intervene.operators import apply_operator


@pytest.fixture()
def tensors():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 8, generator=g)
    v = torch.randn(3, 8, generator=g)
    c = torch.tensor([[0.0] * 5, [1.0] * 5, [2.0] * 5])
    return h, v, c


def test_add(tensors):
    h, v, c = tensors
    out = apply_operator("add", h, v, c)
    assert torch.equal(out[0], h[0])
    torch.testing.assert_close(out[2], h[2] + 2 * v[2])


def test_norm_add_keeps_norm_and_moves_towards_v(tensors):
    h, v, c = tensors
    out = apply_operator("norm_add", h, v, c)
    assert torch.equal(out[0], h[0])
    torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1))
    u = v / v.norm(dim=-1, keepdim=True)
    before, after = (h[1:] * u[1:, None]).sum(-1), (out[1:] * u[1:, None]).sum(-1)
    assert (after > before).all()


def test_ablate_removes_component(tensors):
    h, v, c = tensors
    out = apply_operator("ablate", h, v, c)
    u = v / v.norm(dim=-1, keepdim=True)
    assert torch.equal(out[0], h[0])
    torch.testing.assert_close((out[1] * u[1]).sum(-1), torch.zeros(5), atol=1e-5, rtol=0)


def test_unknown_operator(tensors):
    with pytest.raises(ValueError, match="Unknown steering operator"):
        apply_operator("scale", *tensors)
