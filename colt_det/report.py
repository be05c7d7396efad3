"""How a detection run's report reads: per-class AP (the paper's Table VII) with an mAP row and a bar chart, in
a run's report and in the comparison of runs, and the figure of the boxes the dense model and the final ticket
find on a few fixed test images."""

from __future__ import annotations

from dataclasses import replace

from colt_core.io import atomic_write_bytes
from colt_core.report import ReportStyle
from colt_core.report.figure import ReportFigure, saved_previews
from colt_core.rundir import RunDir, RunSummary
from colt_det.figure import draw_detection_figure

REPORT = ReportStyle(title="COLT detection run", per_class_title="Per-class AP (%)", per_class_name="ap",
                     per_class_axis="AP (%)", digits=1, mean_row="mAP", count_title="test objects",
                     compare_per_class=True, per_class_metric="AP", per_class_source="Table VII")


def report_style(metric: str) -> ReportStyle:
    """The report of a run whose headline metric is `metric`: COCO mAP runs show AP50 and AP75 beside it."""
    if metric != "coco":
        return REPORT
    return replace(REPORT, extra_columns={"coco.AP50": "AP50", "coco.AP75": "AP75"})


def report_figure(run: RunDir, summary: RunSummary) -> ReportFigure | None:
    """detections.png: the ground truth beside the boxes of the dense model and of the last evaluated ticket on
    the preview images their evaluations kept; None where no evaluation kept one (an older run)."""
    columns = saved_previews(run, summary)
    if not columns:
        return None
    previews = [preview for _, preview in columns]
    path = run.figure("detections")
    atomic_write_bytes(draw_detection_figure(columns), path)
    ids = ", ".join(str(image["id"]) for image in previews[0]["images"])
    threshold = min(float(preview["score_threshold"]) for preview in previews)
    caption = (f"Test images {ids} (the first {len(previews[0]['images'])} by id), one per row. Columns: the "
               f"ground truth (objects the evaluation ignores marked \"ignored\"), then the boxes of "
               f"{', '.join(title for title, _ in columns)} scoring at least {threshold:g}, each labelled with its "
               "class and score.")
    return ReportFigure(path=path, title="Detections on fixed test images", caption=caption)
