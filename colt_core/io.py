"""Atomic file and folder writing and checked loading, so a killed run never leaves a half-written file behind."""

from __future__ import annotations

import errno
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


class DiskFullError(UserError, OSError):
    """A write found no space left (ENOSPC) or the user's quota spent (EDQUOT); every file written before it is
    intact and the file it was writing keeps its old contents, so the run resumes once space is freed."""


_FULL = {errno.ENOSPC: "ENOSPC, no space left on the device", errno.EDQUOT: "EDQUOT, disk quota exceeded"}
# torch.save wraps the OSError of a failed write in a RuntimeError; C++ writers may say it in words only.
_FULL_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}


def _full_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT when `exc` (or what it wraps) says the disk is full, else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short walk down __cause__/__context__; chains can be cyclic
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return seen.errno
        if isinstance(seen, (OSError, RuntimeError)):
            found = next((code for words, code in _FULL_WORDS.items() if words in str(seen)), None)
            if found is not None:
                return found
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_full(path: Path, code: int) -> DiskFullError:
    """The one-line error for a full disk while writing `path`: the errno, the file and the space left."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{_byte_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"{path}: {_FULL[code]} while writing it ({free} on the file system of {folder}); every "
                         "file written before it is intact: free some space and run the command again (a run: "
                         "with --resume)")


@contextmanager
def _disk_full_as_user_error(path: Path) -> Iterator[None]:
    """Turn a full disk inside the block into a `DiskFullError` naming `path`; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        code = _full_errno(exc)
        if code is None:
            raise
        raise _disk_full(path, code) from exc


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
    """`write(f)` into a temporary file beside `path`, then rename it over `path`: a failure (a full disk
    included, raised as `DiskFullError`) removes the temporary file and leaves `path` as it was."""
    path = Path(path)
    with _disk_full_as_user_error(path):
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
    with _disk_full_as_user_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    retired = None
    try:
        with _disk_full_as_user_error(target):  # the block's own writes too: a full disk is one line
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
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    return load_json_file(path, what="the file", fix="delete it to recompute it")


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


JSON_SIZE_LIMIT = 8 * 2**30  # bytes; COCO's train2017 instances file is 0.45 GB, LVIS's 1.1 GB


def load_json_file(path: str | os.PathLike, *, what: str = "JSON file", fix: str = "",
                   error: Callable[[str], Exception] = CheckpointError, max_bytes: int = JSON_SIZE_LIMIT) -> Any:
    """Parse a JSON file a user brings (an annotations or results file), or raise `error(message)`: one line
    naming the file, what is wrong with it and `fix`. Refused: a missing path, one that is not a regular file
    (a folder, a device, a pipe), a file over `max_bytes` (checked before it is read), an unreadable one, text
    that is not UTF-8 (a UTF-8 byte-order mark is allowed), invalid JSON, nesting deeper than the parser
    goes, numbers longer than Python converts, and a file too big to hold in memory once parsed."""
    path = Path(path)
    value, problem = _parse_json_file(path, what, max_bytes)
    if problem is not None:
        raise error(f"{path}: {problem}" + (f"; {fix}" if fix else ""))
    return value


def _parse_json_file(path: Path, what: str, max_bytes: int) -> tuple[Any, str | None]:
    """(the parsed value, None), or (None, what is wrong with the file in a few words)."""
    size = 0
    try:
        if not path.is_file():
            return None, f"{what} not found" if not path.exists() else f"{what} is not a regular file"
        size = path.stat().st_size
        if size > max_bytes:
            return None, (f"{what} is {_byte_size(size)}, more than the {_byte_size(max_bytes)} a JSON file read "
                          "here may hold")
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read {what} ({exc.strerror or type(exc).__name__})"
    except MemoryError:
        return None, f"{what} ({_byte_size(size)}) does not fit in memory"
    try:
        text = data.decode("utf-8-sig")
        del data
        return json.loads(text), None
    except UnicodeDecodeError as exc:
        return None, f"{what} is not UTF-8 text (byte {exc.start}: {exc.reason}), as JSON files are"
    except json.JSONDecodeError as exc:
        return None, f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return None, f"{what} nests its lists or objects too deeply to be read (real files nest a few levels)"
    except MemoryError:
        return None, f"{what} ({_byte_size(size)}) does not fit in memory once parsed"
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return None, f"{what} is not readable JSON ({str(exc).split(';')[0]})"


def _byte_size(count: int) -> str:
    """1234567 -> "1.2 MiB": a file size for a message."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
