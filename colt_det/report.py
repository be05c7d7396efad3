"""How a detection run's report reads: per-class AP (the paper's Table VII) with an mAP row and a bar chart, in
a run's report and in the comparison of runs."""

from __future__ import annotations

from dataclasses import replace

from colt_core.report import ReportStyle

REPORT = ReportStyle(title="COLT detection run", per_class_title="Per-class AP (%)", per_class_name="ap",
                     per_class_axis="AP (%)", digits=1, mean_row="mAP", count_title="test objects",
                     compare_per_class=True, per_class_metric="AP", per_class_source="Table VII")


def report_style(metric: str) -> ReportStyle:
    """The report of a run whose headline metric is `metric`: COCO mAP runs show AP50 and AP75 beside it."""
    if metric != "coco":
        return REPORT
    return replace(REPORT, extra_columns={"coco.AP50": "AP50", "coco.AP75": "AP75"})
