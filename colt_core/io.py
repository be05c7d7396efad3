"""Atomic file and folder writing and checked loading, so a killed run never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from colt_core.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A file on disk is missing, truncated or not what it claims to be."""


def _umask() -> int:
    """The process's umask: read from /proc where there is one (no change to the process), else set and reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); give it the mode a plain open(path, "w") would.
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file in the same directory, then rename over `path`."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write bytes atomically."""
    _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    atomic_write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", path)


@contextmanager
def staged_directory(target: str | os.PathLike, *, written: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `target` to fill (its completion marker last); when the block ends
    without error, rename it to `target`, replacing whatever is there. An interrupted block leaves nothing behind,
    so a half-written tree never looks complete.

    Two processes may write the same tree at once: when the rename fails because another one renamed its tree
    into place first, and `written(target)` says that tree is the one this block wrote (e.g. its marker names
    the same parameters), the write counts as done. The folder gets the mode a plain mkdir would give it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    retired = None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes the folder private
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            try:
                os.replace(target, retired / target.name)
            except FileNotFoundError:
                pass  # another process moved it away first
        try:
            os.replace(staging, target)
        except OSError:
            if not written(target):
                raise
    finally:
        for folder in (staging, retired):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); delete it to recompute it") from None


RUN_FILE_FIX = "delete it and resume the run, which recomputes it"


def load_checkpoint(path: str | os.PathLike, *, weights_only: bool = True, fix: str = RUN_FILE_FIX) -> Any:
    """`torch.load` on the CPU with one clear error for a missing or corrupt file.

    `fix` is the advice for a damaged file: the default suits the files a run recomputes on resume; files
    the user brings (a ticket, pretrained weights) say where a good copy comes from.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - torch raises many unrelated types for a damaged file
        raise CheckpointError(f"{path}: cannot be read as a PyTorch file ({_first_sentence(exc)}); the file is "
                              f"damaged or from another program: {fix}") from None


def _first_sentence(exc: BaseException) -> str:
    """What went wrong, in a few words: torch's loading errors run to paragraphs of advice."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects, not only tensors"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")
