from __future__ import annotations

import pytest
import torch

from terraseg.workflows.bench.train import write_sample_store


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """Two 256 x 192 synthetic scenes at 2 m tiled into 64-pixel tiles (in-process)."""
    return write_sample_store(
        tmp_path_factory.mktemp("train-store"), scenes=2, size="256x192", tile=64, resolution=2.0
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the suite shares the cores with others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
