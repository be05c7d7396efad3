"""How a detection run's report reads: per-class AP (the paper's Table VII) with an mAP row and a bar chart."""

from __future__ import annotations

from colt_core.report import ReportStyle

REPORT = ReportStyle(title="COLT detection run", per_class_title="Per-class AP (%)", per_class_name="ap",
                     per_class_axis="AP (%)", digits=1, mean_row="mAP")
