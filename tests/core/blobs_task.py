"""A third task, added the way a newcomer adds one: this module, one config class and one registration.

It reuses the engine tests' toy (Gaussian blobs and a tiny Conv1d/Linear net); nothing outside this file knows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toy import NUM_CLASSES, ToyNet, ToyTask

from colt_core.config import at_least, field
from colt_core.export import ExportTarget
from colt_core.registry import TaskEntry, register_task
from colt_core.report import ReportStyle
from colt_core.settings import DataConfig, RunConfig

NAME = "blobs"


@dataclass
class BlobsModelConfig:
    """The toy net has no knobs but its name."""

    name: str = field("toynet", help="the only model: a Conv1d and two linear layers")


@dataclass
class BlobsDataConfig(DataConfig):
    """Gaussian blobs drawn in memory."""

    num_workers: int = field(0, help="DataLoader worker processes", check=at_least(0))


@dataclass
class BlobsRunConfig(RunConfig):
    """A COLT (or LTH) run on the blobs."""

    task: str = field(NAME, help="the task this config is for: blobs")
    data: BlobsDataConfig = field(default_factory=BlobsDataConfig, help="dataset")
    model: BlobsModelConfig = field(default_factory=BlobsModelConfig, help="model")

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES


class BlobsTask(ToyTask):
    def architecture(self) -> dict:
        return {"name": "toynet", "num_classes": NUM_CLASSES}


def export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    return ExportTarget(model=ToyNet(int(architecture["num_classes"])), output_layers=("head",))


STYLE = ReportStyle(title="COLT blobs run", per_class_title="Per-class accuracy (%)", per_class_name="accuracy")

ENTRY = register_task(TaskEntry(name=NAME, config=BlobsRunConfig, build=lambda cfg, dist, prepared: BlobsTask(),
                                report_style=lambda config: STYLE, export_target=export_target))
