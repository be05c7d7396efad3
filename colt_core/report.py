"""The rounds table every front end reports: round, sparsity both ways, the ticket metric, wall time.

Reads the `summary.json` structure the round loop writes; front ends add their own per-class tables.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def metric_name(summary: Mapping[str, Any]) -> str:
    """The headline metric of a run's evaluated tickets (e.g. "top-1 accuracy"), "metric" when none is."""
    for record in summary["rounds"]:
        if "eval" in record and record["eval"].get("metric"):
            return str(record["eval"]["metric"])
    return "metric"


def rounds_rows(summary: Mapping[str, Any], extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One plain row per round: round, sparsity, prune_rate, value (None when not evaluated), the
    evaluation's `extra` keys, wall_time_s. Fractions stay fractions."""
    rows = []
    for record in summary["rounds"]:
        evaluation = record.get("eval", {})
        row = {"round": record["round"], "sparsity": record["sparsity"], "prune_rate": record["prune_rate"],
               "value": _number(evaluation.get("value"))}
        row.update({key: _number(evaluation.get(key)) for key in extra})
        row["wall_time_s"] = float(record.get("wall_time_s", 0.0))
        rows.append(row)
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def rounds_markdown(summary: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> str:
    """A Markdown table of the rounds; `extra` maps further evaluation keys (fractions) to column titles."""
    extra = dict(extra or {})
    titles = ["round", "sparsity (prunable weights, %)", "prune rate (all parameters, %)",
              f"{metric_name(summary)} (%)", *(f"{title} (%)" for title in extra.values()), "wall time (s)"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---:|" * len(titles)]
    for row in rounds_rows(summary, list(extra)):
        cells = [str(row["round"]), _pct(row["sparsity"]), _pct(row["prune_rate"]), _pct(row["value"]),
                 *(_pct(row[key]) for key in extra), f"{row['wall_time_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_csv(summary: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    """The rounds as CSV text with a header row; the metric column is named after the metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = ["round", "sparsity", "prune_rate", "value", *extra, "wall_time_s"]
    writer.writerow([metric_name(summary) if key == "value" else key for key in keys])
    for row in rounds_rows(summary, extra):
        writer.writerow(["" if row[key] is None else row[key] for key in keys])
    return out.getvalue()
