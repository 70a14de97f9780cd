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


@pytest.fixture(autouse=True, scope="session")
def openvino_cache_in_a_temporary_folder(tmp_path_factory):
    """Compiled OpenVINO models are cached per user (`unmix.runtime.openvino_cache`): the tests keep theirs, and
    the subprocesses they start, in a folder of the session's own."""
    import os

    from unmix.runtime.openvino_cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("openvino-cache"))
    yield
    if previous is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = previous
