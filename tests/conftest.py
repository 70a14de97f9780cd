"""Settings shared by every test module."""

import pytest

try:
    import torch
except ImportError:  # the runtime's own venv (scripts/test.sh runs its tests without torch)
    torch = None


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny convolutions run several times faster on one thread than on two contended ones."""
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
