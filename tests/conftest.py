"""Fixtures every test folder shares."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Toy trainings are tiny: one torch thread avoids thread contention on a busy machine (about 5x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def module_tmp_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder the tests of one module share (e.g. one run several tests read), deleted when the module's tests
    end unless one of them failed: with pytest's per-test folders deleted as each test passes (pyproject's
    tmp_path_retention_policy), the suite never holds more than one module's runs on the disk."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)
