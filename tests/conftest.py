"""Fixtures every test folder shares."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Toy trainings are tiny: one torch thread avoids thread contention on a busy machine (about 5x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
