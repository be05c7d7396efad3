"""Typed records of what a run stores: a training, a partition's result, an evaluation, a round, the summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from colt_core.io import atomic_save, atomic_write_json, load_checkpoint, read_json
from colt_core.numbers import as_interval, as_number
from colt_core.rundir.layout import RunDir, RunDirError, TrainingDir

SUMMARY_SCHEMA = 2  # 1: the same fields without "schema" (written before the version was recorded)


@dataclass
class TrainingRecord:
    """How one training went: the selected epoch, its validation loss and metrics, the history, the data."""

    best_epoch: int
    best_val_loss: float
    val_metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"accuracy": ...} of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    early_bird: dict[str, Any] | None = None  # an early-bird training: whether and where it stopped, its trace
    epochs: int | None = None  # epochs it was set to run when not train.epochs (prune.partition_steps: full_data)

    @property
    def stopped_early(self) -> bool:
        return bool(self.early_bird and self.early_bird.get("stopped"))

    def to_dict(self) -> dict[str, Any]:
        out = {"best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
               **{f"val_{k}": v for k, v in self.val_metrics.items()}, "history": self.history, "data": self.data}
        if self.early_bird is not None:
            out["early_bird"] = self.early_bird
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingRecord:
        reserved = {"best_val_loss", "best_epoch", "history", "data", "wall_time_s", "classes"}
        val = {k.removeprefix("val_"): v for k, v in d.items() if k.startswith("val_") and k not in reserved}
        return cls(best_epoch=int(d.get("best_epoch", -1)), best_val_loss=float(d.get("best_val_loss", "nan")),
                   val_metrics=val, history=list(d.get("history", [])), data=dict(d.get("data", {})),
                   early_bird=d.get("early_bird"), epochs=d.get("epochs"))


@dataclass
class PartitionResult:
    """What one partition training stored (round_XX/partition_Y/metrics.json)."""

    classes: list[int]
    training: TrainingRecord
    wall_time_s: float = 0.0
    slot: int | None = None  # under torchrun: the first rank of the ranks that trained it (None: one process)

    @property
    def wall_time_without_stop_s(self) -> float:
        """Its wall time had it run every epoch it was set to (estimated per epoch for an early-bird stop)."""
        bird = self.training.early_bird
        if not bird or not bird.get("epochs_run"):
            return self.wall_time_s
        return self.wall_time_s * float(bird["epochs_configured"]) / float(bird["epochs_run"])

    def epochs(self) -> tuple[float, float]:
        """(epochs it ran, epochs it was set to run)."""
        bird = self.training.early_bird
        if bird:
            return float(bird["epochs_run"]), float(bird["epochs_configured"])
        ran = float(len(self.training.history))
        return ran, float(self.training.epochs or ran)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.training.to_dict(), "wall_time_s": self.wall_time_s, "classes": list(self.classes)}
        if self.slot is not None:
            out["slot"] = self.slot
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionResult:
        return cls(classes=list(d.get("classes", [])), training=TrainingRecord.from_dict(d),
                   wall_time_s=float(d.get("wall_time_s", 0.0)), slot=d.get("slot"))


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
        return cls(metric=str(metrics["metric"]), value=as_number(metrics["value"], keep_nan=True),
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

    def interval(self, key: str = "value") -> tuple[float, float] | None:
        """The (lo, hi) interval a task gave a value (its "interval" detail for the headline value, and for a
        metric's "mAP"; "KEY_interval" beside any other, e.g. "coco.AP50_interval"); None where it gave none, as
        in records written before tasks gave intervals."""
        parent, _, name = key.rpartition(".")
        sibling = "interval" if name in ("value", "mAP") else f"{name}_interval"
        return as_interval(self.get(f"{parent}.{sibling}" if parent else sibling))

    @property
    def interval_method(self) -> str | None:
        """How the task made its intervals, e.g. "bootstrap, 1000 resamples of test images, 95% percentile"."""
        method = self.details.get("interval_method")
        return method if isinstance(method, str) else None

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


def _as_they_ran(partitions: list[PartitionResult], time: Callable[[PartitionResult], float]) -> float:
    slots: dict[int | None, float] = {}
    for p in partitions:
        slots[p.slot] = slots.get(p.slot, 0.0) + time(p)
    return float(max(slots.values(), default=0.0))


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
        """The search time of the round: the wall time of its partition trainings (the part of a round that finds
        the next mask; its ticket evaluation and controls are not search), counted as they ran: one after
        another in one process, side by side under torchrun (the slowest rank group's)."""
        return _as_they_ran(self.partitions or [], lambda p: p.wall_time_s)

    @property
    def search_time_without_stop_s(self) -> float:
        """The search time had every early-bird training run all its epochs (estimated per epoch)."""
        return _as_they_ran(self.partitions or [], lambda p: p.wall_time_without_stop_s)

    def search_epochs(self) -> tuple[float, float]:
        """(epochs the round's search trainings ran, epochs they were set to run), summed over its partitions."""
        pairs = [p.epochs() for p in self.partitions or []]
        return sum(a for a, _ in pairs), sum(b for _, b in pairs)

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

    def search_time_before(self, r: int, *, without_stop: bool = False) -> float:
        """The time to round `r`'s ticket: the search time of rounds 0 … r-1, the trainings that found its mask."""
        return float(sum(rec.search_time_without_stop_s if without_stop else rec.search_time_s
                         for rec in self.rounds if rec.round < r))

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
