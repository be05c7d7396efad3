"""Creating, resuming and replacing a run directory: never overwrite a run without `--overwrite`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.errors import UserError
from colt_core.io import atomic_write_text
from colt_core.rundir.layout import RunDir, RunDirError


def prepare_run_dir(path: str | Path, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                    ignore_on_resume: Sequence[str] = ("output_dir",),
                    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunDir:
    """Create the run directory, or reopen it for `--resume`; never overwrite without `--overwrite`.

    `complete(stored)` gives the stored config with today's defaults for settings it predates, so a run
    written before a setting existed resumes as long as it used that setting's default.
    """
    run = RunDir(Path(path))
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    exists = run.path.exists() and any(run.path.iterdir())
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
        return run
    if exists and not overwrite:
        raise RunDirError(f"{run.path} already holds a run; pass --resume to continue it or --overwrite to "
                          "replace it (or choose another directory with --out)")
    if exists:
        if not run.config.is_file():
            raise RunDirError(f"{run.path} is not empty and not a COLT run directory; refusing to delete it")
        shutil.rmtree(run.path)
    run.path.mkdir(parents=True, exist_ok=True)
    return run


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
