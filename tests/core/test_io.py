"""Atomic writes: a file or folder appears whole or not at all, with the mode a plain open() or mkdir would give it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from colt_core.errors import UserError
from colt_core.io import (
    DiskFullError,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    read_json,
    staged_directory,
)


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


def _fill(folder: Path, text: str) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "data.txt").write_text(text)
    (folder / "done").write_text(text)  # the completion marker, last


def _done_with(text: str):
    def written(folder: Path) -> bool:
        return (folder / "done").is_file() and (folder / "done").read_text() == text

    return written


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_staged_directory_appears_whole_with_the_mode_of_a_plain_mkdir(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        with staged_directory(tmp_path / "tree", written=_done_with("a")) as folder:
            assert folder.parent == tmp_path and folder.name.startswith(".tree.")
            assert not (tmp_path / "tree").exists()
            _fill(folder, "a")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    assert (tmp_path / "tree" / "sub" / "data.txt").read_text() == "a"
    assert stat.S_IMODE((tmp_path / "tree").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "tree"]


def test_a_staged_directory_replaces_the_old_tree_and_an_interrupted_one_leaves_nothing(tmp_path: Path):
    target = tmp_path / "tree"
    with staged_directory(target, written=_done_with("a")) as folder:
        _fill(folder, "a")
    with staged_directory(target, written=_done_with("b")) as folder:
        _fill(folder, "b")
    assert (target / "sub" / "data.txt").read_text() == "b"
    with pytest.raises(KeyboardInterrupt), staged_directory(target, written=_done_with("c")) as folder:
        (folder / "half").write_text("c")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["done", "sub"] and (target / "done").read_text() == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # no staging or retired folder left


@pytest.mark.parametrize("same", [True, False])
def test_losing_the_rename_race_counts_as_done_only_for_the_same_tree(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, same: bool):
    target = tmp_path / "tree"
    rename = os.replace

    def another_process_first(src, dst):
        # Another process renames its tree into place between this one's check and its rename.
        if Path(dst) == target and not target.exists():
            target.mkdir()
            _fill(target, "a" if same else "other")
            (target / "theirs").touch()
        rename(src, dst)

    monkeypatch.setattr(os, "replace", another_process_first)
    if same:
        with staged_directory(target, written=_done_with("a")) as folder:
            _fill(folder, "a")
    else:
        with pytest.raises(OSError), staged_directory(target, written=_done_with("a")) as folder:
            _fill(folder, "a")
    assert (target / "theirs").is_file() and (target / "done").read_text() == ("a" if same else "other")
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # this process's staging folder is gone


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch):
    """`full_disk(code)`: from now on every write into a file opened by descriptor (the atomic writers' temporary
    files) fails with `code`; the file system reports 1.5 MiB free."""
    fdopen = os.fdopen

    class Full:
        def __init__(self, file, code: int) -> None:
            self._file, self._code = file, code

        def write(self, data) -> int:
            raise OSError(self._code, os.strerror(self._code))

        def __getattr__(self, name: str):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self._file.close()

    def fail_with(code: int) -> None:
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(fdopen(fd, *a, **k), code))

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 3 * 2**19))
    return fail_with


@pytest.mark.parametrize("code, name", [(errno.ENOSPC, "ENOSPC"), (errno.EDQUOT, "EDQUOT")])
def test_a_full_disk_is_one_user_error_naming_the_file_and_the_free_space_and_the_old_file_stays(
        tmp_path: Path, full_disk, code: int, name: str):
    atomic_write_text("old", tmp_path / "report.md")
    atomic_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    old_model = (tmp_path / "model.pt").read_bytes()
    full_disk(code)
    with pytest.raises(DiskFullError) as text:
        atomic_write_text("new", tmp_path / "report.md")
    with pytest.raises(DiskFullError) as tensors:  # torch.save wraps the failed write in a RuntimeError
        atomic_save({"w": torch.zeros(1000)}, tmp_path / "model.pt")
    for caught, path in ((text, "report.md"), (tensors, "model.pt")):
        assert isinstance(caught.value, UserError)
        assert str(caught.value).startswith(f"{tmp_path / path}: {name}, "), caught.value
        assert f"(1.5 MiB free on the file system of {tmp_path})" in str(caught.value)
    assert (tmp_path / "report.md").read_text() == "old" and (tmp_path / "model.pt").read_bytes() == old_model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "report.md"]  # no temporary left


def test_a_full_disk_in_a_staged_directory_names_the_target_and_leaves_nothing(tmp_path: Path):
    target = tmp_path / "tree"
    with pytest.raises(DiskFullError, match=rf"^{target}: ENOSPC, no space left on the device while writing it"):
        with staged_directory(target, written=_done_with("a")) as folder:
            (folder / "done").write_text("a")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "image.png"))
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_are_not_taken_for_a_full_disk(tmp_path: Path, full_disk):
    full_disk(errno.EIO)
    with pytest.raises(OSError) as caught:
        atomic_write_text("x", tmp_path / "f.txt")
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []
