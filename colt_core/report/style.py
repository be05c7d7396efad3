"""How a task's reports read (`ReportStyle`), and the style of a run found through the task registry.

A front end only says what its metric is called and how it is shown; the reports themselves are task-agnostic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from colt_core.registry import UnknownTaskError, task_of_architecture, task_of_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportStyle:
    """How a task's report reads: titles, the per-class metric's file name, extra rounds-table columns, and
    whether a comparison of runs shows the per-class values of their tickets."""

    title: str  # e.g. "COLT detection run"
    per_class_title: str  # e.g. "Per-class AP (%)"
    per_class_name: str  # file stem: per_class_<name>.csv/.json/.png
    per_class_axis: str = "value (%)"
    note: str = ""  # a paragraph under the rounds table's heading
    extra_columns: Mapping[str, str] = field(default_factory=dict)  # evaluation key -> column title
    digits: int = 2  # decimals of the per-class percentages
    mean_row: str | None = None  # e.g. "mAP": a last row with each ticket's mean over the classes
    markdown_class_limit: int = 25  # more classes than this go to the CSV only
    plot: bool = True
    count_title: str = "test samples"  # what a task's test_per_class counts, e.g. "test objects"
    # The comparison of runs adds a per-class table of the dense model and the tickets at matching sparsity.
    compare_per_class: bool = False
    per_class_metric: str = "value"  # the per-class metric inside a sentence, e.g. "AP"
    per_class_source: str = ""  # the paper's table that per-class comparison reproduces, e.g. "Table VII"
    # Titles of the report of a given ticket trained on the full data, and of a control of one.
    given_ticket_title: str = "{title}: a given ticket"  # {title}: `title`
    given_control_title: str = "{title}: a given {control} control"  # {control}: e.g. random_prune


def task_style(config: Mapping[str, Any], architecture: Mapping[str, Any] | None, *, config_source: str = "config",
               ticket_source: str = "ticket") -> ReportStyle | None:
    """The report style of a run's task, found in the registry by the `task` key of its config (given as plain
    data) or, for an older run whose stored config lacks it, of its ticket's architecture; the sources name the
    files in a message.

    None where neither names a task (no task-specific style), or where the task is not registered here (a
    warning: that task's report parts are left out, the task-agnostic ones are written all the same).
    """
    try:
        if isinstance(config, Mapping) and "task" in config:
            entry = task_of_config(config, config_source)
        elif isinstance(architecture, Mapping) and "task" in architecture:
            entry = task_of_architecture(architecture, ticket_source)
        else:
            return None
    except UnknownTaskError as exc:
        log.warning("%s; its task-specific report parts are left out", exc)
        return None
    return entry.report_style(config)
