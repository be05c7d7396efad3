"""The run directory: every path a run has, and typed records of what is stored there.

    runs/NAME/
      config.yaml  split.json  init.pt  ticket.pt  summary.json  report.md (+ CSV/JSON/PNG copies)  tb/
      round_XX/mask.pt  round_XX/sparsity.json
      round_XX/partition_Y/   one partition's training (a `TrainingDir`)
      round_XX/eval/          the ticket trained on the full data and evaluated (a `TrainingDir`)
      round_XX/controls/NAME/ a control of that ticket (random_prune, random_reinit), trained the same way

A ticket trained on its own (`tools/train_colt_cls.py --ticket`) writes one `TrainingDir` at the top of its
run directory. The round loop, transfer, export, compare and the reports reach every file through these
classes, and read and write what they store through the records below, so the layout is written once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from colt_core.errors import UserError
from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, load_checkpoint, read_json

SUMMARY_SCHEMA = 2  # 1: the same fields without "schema" (written before the version was recorded)


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

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

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
                          "--out directory of a training run (tools/train_colt_det.py or train_colt_cls.py)")
    return run


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


# ----- records -----------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class TrainingRecord:
    """How one training went: the selected epoch, its validation loss and metrics, the history, the data."""

    best_epoch: int
    best_val_loss: float
    val_metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"accuracy": ...} of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                **{f"val_{k}": v for k, v in self.val_metrics.items()}, "history": self.history,
                "data": self.data}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingRecord:
        reserved = {"best_val_loss", "best_epoch", "history", "data", "wall_time_s", "classes"}
        val = {k.removeprefix("val_"): v for k, v in d.items() if k.startswith("val_") and k not in reserved}
        return cls(best_epoch=int(d.get("best_epoch", -1)), best_val_loss=float(d.get("best_val_loss", "nan")),
                   val_metrics=val, history=list(d.get("history", [])), data=dict(d.get("data", {})))


@dataclass
class PartitionResult:
    """What one partition training stored (round_XX/partition_Y/metrics.json)."""

    classes: list[int]
    training: TrainingRecord
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.training.to_dict(), "wall_time_s": self.wall_time_s, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionResult:
        return cls(classes=list(d.get("classes", [])), training=TrainingRecord.from_dict(d),
                   wall_time_s=float(d.get("wall_time_s", 0.0)))


@dataclass
class Evaluation:
    """A ticket trained on the full data and evaluated on the test set (round_XX/eval/metrics.json)."""

    metric: str
    value: float | None
    per_class: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # the rest of the task's metrics (AP kinds, top-5)
    training: TrainingRecord | None = None
    reused: str | None = None  # LTH: the round's own full-data training (relative to the run directory)
    wall_time_s: float = 0.0

    _OWN = ("metric", "value", "per_class", "train", "wall_time_s")

    @classmethod
    def from_task(cls, metrics: Mapping[str, Any], source: str = "evaluate") -> Evaluation:
        """The record of a task's `evaluate()` result, which must name its metric and value."""
        if not isinstance(metrics, Mapping) or "metric" not in metrics or "value" not in metrics:
            raise TypeError(f"{source} must return a mapping with at least 'metric' and 'value', got {metrics!r}")
        return cls(metric=str(metrics["metric"]), value=_number(metrics["value"]),
                   per_class=dict(metrics.get("per_class") or {}),
                   details={k: v for k, v in metrics.items() if k not in cls._OWN})

    def get(self, key: str, default: Any = None) -> Any:
        """A detail by name (e.g. "top5", or "coco.AP50" inside a nested one), or one of the record's own
        fields."""
        if key in ("metric", "value", "per_class", "wall_time_s"):
            return getattr(self, key)
        node: Any = self.details
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict[str, Any]:
        train = {"reused": self.reused} if self.reused else (self.training.to_dict() if self.training else {})
        return {"metric": self.metric, "value": self.value, "per_class": self.per_class, **self.details,
                "train": train, "wall_time_s": self.wall_time_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        train = d.get("train") or {}
        record = cls.from_task(d, source="an evaluation record")
        record.reused = train.get("reused")
        record.training = TrainingRecord.from_dict(train) if train and not record.reused else None
        record.wall_time_s = float(d.get("wall_time_s", 0.0))
        return record


@dataclass
class RoundRecord:
    """One round in summary.json: its mask's sparsity, its trainings and, when evaluated, its ticket."""

    round: int
    sparsity: float  # over the prunable weights
    prune_rate: float  # the paper's zero parameters / all parameters
    groups: dict[str, float] = field(default_factory=dict)
    partitions: list[PartitionResult] | None = None  # None: the final round, which trains nothing
    evaluation: Evaluation | None = None
    controls: dict[str, Evaluation] = field(default_factory=dict)  # control name -> its evaluation
    wall_time_s: float = 0.0  # partition trainings and the ticket evaluation (controls keep their own times)

    def stored_time(self) -> float:
        """Wall time of the round as the sum of its stored trainings (stable across resumes)."""
        total = sum(p.wall_time_s for p in self.partitions or [])
        return total + (self.evaluation.wall_time_s if self.evaluation else 0.0)

    @property
    def search_time_s(self) -> float:
        """Wall time of the partition trainings, the part of a round that finds the next mask."""
        return float(sum(p.wall_time_s for p in self.partitions or []))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, "sparsity": self.sparsity, "prune_rate": self.prune_rate,
                               "groups": self.groups}
        if self.partitions is not None:
            out["partitions"] = [p.to_dict() for p in self.partitions]
        if self.evaluation is not None:
            out["eval"] = self.evaluation.to_dict()
        if self.controls:
            out["controls"] = {name: evaluation.to_dict() for name, evaluation in self.controls.items()}
        out["wall_time_s"] = self.wall_time_s
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundRecord:
        partitions = d.get("partitions")
        return cls(round=int(d["round"]), sparsity=float(d["sparsity"]), prune_rate=float(d.get("prune_rate", 0.0)),
                   groups=dict(d.get("groups", {})),
                   partitions=None if partitions is None else [PartitionResult.from_dict(p) for p in partitions],
                   evaluation=Evaluation.from_dict(d["eval"]) if d.get("eval") else None,
                   controls={name: Evaluation.from_dict(c) for name, c in (d.get("controls") or {}).items()},
                   wall_time_s=float(d.get("wall_time_s", 0.0)))


@dataclass
class RunSummary:
    """summary.json: the method and every round so far."""

    method: str
    partitions: int
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        """COLT-N or LTH."""
        return f"COLT-{self.partitions}" if self.method == "colt" else self.method.upper()

    @property
    def evaluated(self) -> list[RoundRecord]:
        """The rounds whose ticket was evaluated, in order."""
        return [r for r in self.rounds if r.evaluation is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SUMMARY_SCHEMA, "method": self.method, "partitions": self.partitions,
                "rounds": [r.to_dict() for r in self.rounds]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "summary.json") -> RunSummary:
        schema = d.get("schema", 1)
        if not isinstance(schema, int) or schema > SUMMARY_SCHEMA:
            raise RunDirError(f"{source}: summary schema {schema!r} is newer than this code reads "
                              f"({SUMMARY_SCHEMA}); update the colt package")
        try:
            return cls(method=str(d["method"]), partitions=int(d["partitions"]),
                       rounds=[RoundRecord.from_dict(r) for r in d.get("rounds", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{source}: not a run summary ({type(exc).__name__}: {exc})") from None


# ----- reading and writing ---------------------------------------------------------------------------
def read_summary(run: RunDir) -> RunSummary:
    return RunSummary.from_dict(read_json(run.summary), source=str(run.summary))


def write_summary(run: RunDir, summary: RunSummary) -> None:
    atomic_write_json(summary.to_dict(), run.summary)


def read_evaluation(training: TrainingDir) -> Evaluation:
    return Evaluation.from_dict(read_json(training.metrics))


def save_partition(training: TrainingDir, state: Mapping[str, torch.Tensor], result: PartitionResult,
                   rewind_state: Mapping[str, torch.Tensor] | None = None) -> None:
    """The selected weights (and late-rewinding weights), then the metrics that mark the training done."""
    if rewind_state is not None:
        atomic_save(dict(rewind_state), training.rewind)
    atomic_save(dict(state), training.model)
    atomic_write_json(result.to_dict(), training.metrics)


def load_partition(training: TrainingDir) -> tuple[dict[str, torch.Tensor], PartitionResult]:
    return load_checkpoint(training.model), PartitionResult.from_dict(read_json(training.metrics))

