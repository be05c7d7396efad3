"""Creating, resuming and replacing a run directory, one writer at a time.

Never overwrite a run without `--overwrite`; never delete the old run before the new one is ready to start
(`check_run_dir` reads, `start_run_dir` writes, and a caller builds its task in between); never let two
processes write one directory (`RunDirLock`).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.errors import UserError
from colt_core.io import atomic_write_text
from colt_core.rundir.layout import RunDir, RunDirError


class RunDirBusyError(RunDirError):
    """Another live process is writing the run directory."""


class RunDirLock:
    """The one-writer lock of a run directory, taken before anything in it changes and held until the run ends.

    An OS file lock (`filelock`: flock on POSIX) on `RunDir.lock`, which the system drops when the holding process
    ends, killed or not: a lock left by a dead process never blocks `--resume`. The holder writes its process id
    to `RunDir.writer`, so a refused process names it. Readers (`colt export`, `colt compare`) take no lock; under
    torchrun rank 0 holds it for every rank of its job (the other ranks never write the directory).
    """

    def __init__(self, path: str | Path) -> None:
        self.run = RunDir(Path(path))
        self._lock: Any = None

    def acquire(self) -> None:
        """Take the lock, or raise RunDirBusyError naming the process holding it (RunDirError for a folder that
        holds something other than a run, which gets no lock file)."""
        from filelock import FileLock, Timeout

        run = self.run
        if run.contents() and not run.config.is_file() and not run.lock.exists():
            raise RunDirError(f"{run.path} is not empty and not a COLT run directory (no config.yaml); refusing to "
                              "write into it: choose another directory with --out")
        lock = FileLock(run.lock, timeout=0)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RunDirBusyError(f"{run.path} is being written by another process ({_holder(run)}); wait for it "
                                  "to end (or stop it), or choose another directory with --out") from None
        except OSError as exc:
            raise RunDirError(f"{run.path}: cannot write the run directory ({exc.strerror or exc}); choose "
                              "another directory with --out") from None
        self._lock = lock
        try:
            atomic_write_text(f"{os.getpid()} {socket.gethostname()}\n", run.writer)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let the lock go (nothing when it is not held); the lock file stays for the next writer to lock."""
        if self._lock is None:
            return
        try:
            self.run.writer.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(run: RunDir) -> str:
    """The process holding `run`'s lock, as its writer file names it."""
    try:
        pid, _, host = run.writer.read_text().strip().partition(" ")
    except OSError:
        return "its process id is not recorded yet"
    return f"pid {pid}" + (f" on host {host}" if host and host != socket.gethostname() else "")


def check_run_dir(path: str | Path, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                  ignore_on_resume: Sequence[str] = ("output_dir",),
                  complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
    """Whether the run directory may be used as asked, changing nothing: raise RunDirError if not. True when
    `--overwrite` is to replace the run it holds (`start_run_dir` deletes it, once the new run can start).

    `complete(stored)` gives the stored config with today's defaults for settings it predates, so a run
    written before a setting existed resumes as long as it used that setting's default.
    """
    run = RunDir(Path(path))
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    exists = bool(run.contents())
    if exists and resume:
        if not run.config.is_file():
            raise RunDirError(f"{run.path}: not a COLT run directory (no config.yaml); cannot resume it")
        import yaml

        stored = yaml.safe_load(run.config.read_text())
        if complete is not None and isinstance(stored, dict):
            try:
                stored = complete(stored)
            except UserError as exc:
                raise RunDirError(f"{run.config}: the stored config does not load ({exc}); resume it with the "
                                  "version that wrote it, or start a new run with --out DIR / --overwrite") from None
        diff = _config_diff(stored, dict(config), ignore_on_resume)
        if diff:
            raise RunDirError(f"{run.path}: the config differs from the stored run's at {', '.join(diff[:5])}; "
                              "resume with the same config, or start a new run with --out DIR / --overwrite")
        return False
    if exists and not overwrite:
        raise RunDirError(f"{run.path} already holds a run; pass --resume to continue it or --overwrite to "
                          "replace it (or choose another directory with --out)")
    if exists and not run.config.is_file():
        raise RunDirError(f"{run.path} is not empty and not a COLT run directory; refusing to delete it")
    return exists


def start_run_dir(path: str | Path, *, replace: bool) -> RunDir:
    """The run directory, created; with `replace`, first emptied of the run it holds. Its config.yaml goes last,
    so an interrupted deletion still reads as a run `--overwrite` may replace; the writer's lock files stay."""
    run = RunDir(Path(path))
    if replace:
        for entry in sorted(run.contents(), key=lambda p: p == run.config):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run.path.mkdir(parents=True, exist_ok=True)
    return run


def prepare_run_dir(path: str | Path, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                    ignore_on_resume: Sequence[str] = ("output_dir",),
                    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunDir:
    """Create the run directory, or reopen it for `--resume`; never overwrite without `--overwrite` (see
    `check_run_dir`). It takes no lock: a process writing the run holds a `RunDirLock` around this and the run,
    and one that must validate its inputs before replacing a run calls `check_run_dir` and `start_run_dir`."""
    replace = check_run_dir(path, config, resume=resume, overwrite=overwrite, ignore_on_resume=ignore_on_resume,
                            complete=complete)
    return start_run_dir(path, replace=replace)


def _config_diff(a: Any, b: Any, ignore: Sequence[str], prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else k
            if key in ignore:
                continue
            out += _config_diff(a.get(k), b.get(k), ignore, key)
        return out
    return [] if a == b else [prefix or "<root>"]


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """The resolved config as YAML, once: a resumed run keeps the file it started with."""
    if not path.is_file():
        import yaml

        atomic_write_text(yaml.safe_dump(dict(config), sort_keys=False), path)
