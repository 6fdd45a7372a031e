import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Under CPU contention two OpenMP threads made tiny generate ~10x slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
