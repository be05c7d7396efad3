"""How a classification run's report reads: top-1 and top-5 accuracy, per-class test accuracy, the titles of a
given ticket's report, which name the dataset it was trained on (a ticket transfer), and the figure of the
dense model's and the final ticket's confusion matrices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from colt_cls.figure import TICK_LABEL_LIMIT, draw_confusion_figure
from colt_core.io import atomic_write_bytes
from colt_core.report import ReportStyle
from colt_core.report.figure import ReportFigure, saved_previews
from colt_core.rundir import RunDir, RunSummary

REPORT = ReportStyle(
    title="COLT classification run", per_class_title="Per-class test accuracy (%)", per_class_name="accuracy",
    per_class_axis="test accuracy (%)",
    note="Sparsity is over the prunable weights; the prune rate is zero parameters over all parameters. "
         "Accuracy is the ticket's, trained on the full training data, on the test set.",
    extra_columns={"top5": "top-5 accuracy"}, markdown_class_limit=20, plot=False,
    per_class_metric="test accuracy", given_ticket_title="Ticket transfer",
    given_control_title="The {control} control of a ticket")


def report_style(config: Mapping[str, Any]) -> ReportStyle:
    """The report of a classification run, its config given as plain data: REPORT, with a given ticket's titles
    naming the dataset (`data.name`) it is trained on."""
    data = config.get("data")
    dataset = data.get("name") if isinstance(data, Mapping) else None
    if not dataset:
        return REPORT
    braced = str(dataset).replace("{", "{{").replace("}", "}}")  # the titles are format strings
    return replace(REPORT, given_ticket_title=f"Ticket transfer to {braced}",
                   given_control_title=f"The {{control}} control of a ticket, on {braced}")


def report_figure(run: RunDir, summary: RunSummary) -> ReportFigure | None:
    """confusion.png: the row-normalised test-set confusion matrices of the dense model and of the last
    evaluated ticket, from their evaluations' previews; None where no evaluation kept one (an older run)."""
    columns = saved_previews(run, summary)
    if not columns:
        return None
    path = run.figure("confusion")
    atomic_write_bytes(draw_confusion_figure(columns), path)
    classes = len(columns[0][1]["classes"])
    names = "" if classes <= TICK_LABEL_LIMIT else (
        f" With {classes} classes the axes carry no class names; each evaluation's matrix, in the dataset's "
        "class order, is in its preview.json.")
    caption = (f"Test-set confusion matrices of {', '.join(title for title, _ in columns)}: the true class down, "
               "the predicted class across, each row divided by the true class's test images (row-normalised)."
               + names)
    return ReportFigure(path=path, title="Confusion matrices", caption=caption)
