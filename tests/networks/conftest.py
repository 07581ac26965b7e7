"""Fixtures of the network tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Image fits on one intra-op thread: on a shared 2-core machine two threads ran them 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
