"""Every path of a run directory, written once.

    runs/NAME/
      config.yaml  split.json  init.pt  ticket.pt  summary.json  report.md (+ CSV/JSON/PNG copies)  tb/
      round_XX/mask.pt  round_XX/sparsity.json
      round_XX/partition_Y/   one partition's training (a `TrainingDir`)
      round_XX/eval/          the ticket trained on the full data and evaluated (a `TrainingDir`)
      round_XX/controls/NAME/ a control of that ticket (random_prune, random_reinit), trained the same way
      .writer.lock  .writer.pid  the lock of the one process writing the run, and that process's id

A ticket trained on its own (`colt train --ticket`) writes one `TrainingDir` at the top of its run directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colt_core.errors import UserError


class RunDirError(UserError, RuntimeError):
    """The output directory cannot be used as asked (exists, differs, or is not a run)."""


# ----- the layout ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingDir:
    """The folder of one training: the selected weights, their metrics, the data summary, work in flight."""

    path: Path

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def data(self) -> Path:
        """Images (and objects, classes) the training and validation sets held."""
        return self.path / "data.json"

    @property
    def checkpoint(self) -> Path:
        """The resumable per-epoch checkpoint; deleted once the training has finished."""
        return self.path / "train_state.pt"

    @property
    def rewind(self) -> Path:
        """Late-rewinding weights (after `prune.rewind_iteration` steps of round 0)."""
        return self.path / "rewind.pt"

    @property
    def mask(self) -> Path:
        """The mask a control trained under, when it is not the round's (random_prune)."""
        return self.path / "mask.pt"

    @property
    def outputs(self) -> Path:
        """A folder for the task's own evaluation files (e.g. Pascal VOC results files)."""
        return self.path / "results"

    @property
    def detections(self) -> Path:
        """The detections of an evaluation as one results file (COCO's format)."""
        return self.path / "detections.json"

    @property
    def preview(self) -> Path:
        """What a report's figure shows of this evaluation (e.g. boxes on a few fixed test images)."""
        return self.path / "preview.json"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    def is_complete(self) -> bool:
        """Whether the selected weights and their metrics are both on disk."""
        return self.model.is_file() and self.metrics.is_file()


@dataclass(frozen=True)
class RoundDir:
    """One round: the mask it trains under, its sparsity report, its trainings."""

    path: Path
    index: int

    @property
    def mask(self) -> Path:
        return self.path / "mask.pt"

    @property
    def sparsity(self) -> Path:
        return self.path / "sparsity.json"

    def partition(self, i: int) -> TrainingDir:
        return TrainingDir(self.path / f"partition_{i}")

    @property
    def eval(self) -> TrainingDir:
        return TrainingDir(self.path / "eval")

    def control(self, name: str) -> TrainingDir:
        """A control of the round's ticket (e.g. random_prune), trained and evaluated like the ticket."""
        return TrainingDir(self.path / "controls" / name)


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths in it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def init(self) -> Path:
        return self.path / "init.pt"

    @property
    def ticket(self) -> Path:
        return self.path / "ticket.pt"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def rounds_csv(self) -> Path:
        return self.path / "rounds.csv"

    @property
    def rounds_json(self) -> Path:
        return self.path / "rounds.json"

    def per_class(self, name: str, suffix: str) -> Path:
        """The per-class table of the run's tickets, e.g. per_class_ap.csv (`name` names the metric)."""
        return self.path / f"per_class_{name}.{suffix}"

    def figure(self, name: str) -> Path:
        """A figure of the run's report drawn by its task, e.g. detections.png."""
        return self.path / f"{name}.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def lock(self) -> Path:
        """The file the one process writing the run holds an OS lock on (released when that process ends)."""
        return self.path / ".writer.lock"

    @property
    def writer(self) -> Path:
        """The process id and host of the process holding `lock`, so a refused second process can name it."""
        return self.path / ".writer.pid"

    def contents(self) -> list[Path]:
        """What the directory holds besides the writer's lock files (nothing when it does not exist)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name not in (self.lock.name, self.writer.name))

    def tensorboard_for(self, tag: str) -> Path:
        """The TensorBoard folder of one training (`round_00/p1` -> tb/round_00_p1)."""
        return self.tensorboard / tag.replace("/", "_")

    @property
    def training(self) -> TrainingDir:
        """The one training of a ticket trained on its own (a transfer run)."""
        return TrainingDir(self.path)

    def round(self, r: int) -> RoundDir:
        return RoundDir(self.path / f"round_{r:02d}", r)

    def rewind_source(self, method: str) -> TrainingDir:
        """The training whose weights after `prune.rewind_iteration` steps are a late-rewinding run's one rewind
        point: LTH's round 0 (a full-data training), COLT's dense model (round 0's ticket evaluation)."""
        return self.round(0).partition(0) if method == "lth" else self.round(0).eval

    def start_weights(self, r: int, config: Mapping[str, Any]) -> Path:
        """Where round `r`'s ticket starts (`config` is the run's): θ0, or with late rewinding the rewind point
        (round 0, the dense model, starts at θ0 either way)."""
        prune = config.get("prune") or {}
        if r > 0 and prune.get("rewind_iteration"):
            return self.rewind_source(prune.get("method", "colt")).rewind
        return self.init

    def rounds(self) -> list[int]:
        """Rounds whose mask is on disk, in order."""
        found = []
        for path in self.path.glob("round_*"):
            suffix = path.name.removeprefix("round_")
            if suffix.isdigit() and (path / "mask.pt").is_file():
                found.append(int(suffix))
        return sorted(found)

    def is_finished(self) -> bool:
        """A run is finished once its ticket.pt is written."""
        return self.ticket.is_file()

    def resolve(self, relative: str) -> Path:
        """A path stored relative to the run directory (e.g. an evaluation's reused training)."""
        return self.path / relative

    def relative(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()


def open_run(path: str | Path, *, needs: Sequence[str] = ("config", "init")) -> RunDir:
    """An existing run directory, or one clear error naming what it lacks."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunDirError(f"{run.path}: no such run directory")
    missing = [getattr(run, name).name for name in needs if not getattr(run, name).is_file()]
    if missing:
        raise RunDirError(f"{run.path}: not a COLT run directory (it lacks {' or '.join(missing)}); pass the "
                          "--out directory of a training run (colt train)")
    return run
