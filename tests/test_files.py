"""steerlit.files: the checksums used by caches and stores (the atomic writers are tested where they are used)."""

import hashlib

import pytest
import torch

from steerlit.files import atomic_write_bytes, sha256_file, tensors_sha256


def test_sha256_file(tmp_path):
    data = bytes(range(256)) * 1000
    path = atomic_write_bytes(tmp_path / "x.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_tensors_sha256_covers_names_dtypes_shapes_and_values():
    a = torch.arange(6, dtype=torch.float32)
    base = tensors_sha256({"a": a, "b": torch.ones(2, dtype=torch.long)})
    assert base == tensors_sha256({"b": torch.ones(2, dtype=torch.long), "a": a.clone()})  # order-free
    strided = torch.stack([a, a], 1)[:, 0]  # the same values, not contiguous
    assert not strided.is_contiguous() and base == tensors_sha256(
        {"a": strided, "b": torch.ones(2, dtype=torch.long)}
    )
    changed = [
        {"a2": a, "b": torch.ones(2, dtype=torch.long)},
        {"a": a.double(), "b": torch.ones(2, dtype=torch.long)},
        {"a": a.reshape(2, 3), "b": torch.ones(2, dtype=torch.long)},
        {"a": a + torch.tensor([0, 0, 0, 0, 0, 1e-6]), "b": torch.ones(2, dtype=torch.long)},
    ]
    assert len({base, *(tensors_sha256(t) for t in changed)}) == 1 + len(changed)
    assert len(tensors_sha256({"h": torch.ones(3, dtype=torch.bfloat16)})) == 64  # no numpy dtype needed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bool, torch.int8])
def test_tensors_sha256_of_other_dtypes(dtype):
    t = torch.zeros(4, dtype=dtype)
    assert tensors_sha256({"t": t}) == tensors_sha256({"t": t.clone()}) != tensors_sha256({"t": t[:3]})
