"""Atomic writes: the file appears whole or not at all, with the mode a plain open() would give it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, read_json


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_of_a_plain_open_under_the_umask(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        atomic_write_text("x", tmp_path / "text.txt")
        atomic_write_json({"a": 1}, tmp_path / "sub" / "metrics.json")
        atomic_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("text.txt", "sub/metrics.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert read_json(tmp_path / "sub" / "metrics.json") == {"a": 1}
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    atomic_write_text("old", tmp_path / "f.txt")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"x": Unsaveable()}, tmp_path / "f.txt")
    assert (tmp_path / "f.txt").read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
