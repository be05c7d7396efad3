"""The classification task as the layers above the engine find it: registered as "classification"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from colt_cls.config import ClsRunConfig
from colt_core.distributed import DistContext
from colt_core.registry import TaskEntry, register_task
from colt_core.train.task import Task


def build(cfg: ClsRunConfig, dist: DistContext | None, prepared: None) -> Task:
    from colt_cls.task import ClassificationTask

    return ClassificationTask(cfg, dist=dist)


def report_style(config: Mapping[str, Any]) -> Any:
    from colt_cls.report import report_style as style_for_data

    return style_for_data(config)


def report_figure(run: Any, summary: Any) -> Any:
    from colt_cls.report import report_figure as draw

    return draw(run, summary)


def export_target(architecture: Mapping[str, Any]) -> Any:
    from colt_cls.export import classifier_export_target

    return classifier_export_target(architecture)


def _datasets() -> dict[str, Any]:
    from colt_cls.commands import DATASETS, make_data_command

    return {name: make_data_command(name) for name in DATASETS}


ENTRY = register_task(TaskEntry(
    name="classification", config=ClsRunConfig, build=build, report_style=report_style,
    export_target=export_target, datasets=_datasets(), report_figure=report_figure))
