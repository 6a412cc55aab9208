import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The blocks' tests run tiny tensors: one thread is faster, and immune to a busy 2-core
    machine (two threads competing with other jobs made the training test 8x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
