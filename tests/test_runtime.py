"""The runtime helpers: thread limits for a block of work."""

import torch
from threadpoolctl import threadpool_info

from steerlit.runtime import limited_threads


def test_limited_threads_sets_torch_and_blas_threads_and_restores_them():
    before, blas_before = torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]
    with limited_threads(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpool_info()] == blas_before
    with limited_threads(None):
        assert torch.get_num_threads() == before
