"""Run reports for detection: the rounds table, per-class AP (the paper's Table VII), CSV/JSON and a bar chart."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from colt_core.report import rounds_csv, rounds_markdown


def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def ticket_label(record: Mapping[str, Any]) -> str:
    """Column label of an evaluated ticket: the dense model or the round and its sparsity."""
    if record["sparsity"] == 0:
        return "dense"
    return f"round {record['round']} ({100 * record['sparsity']:.1f}% sparse)"


def evaluated(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rounds whose ticket was evaluated, in order."""
    return [r for r in summary["rounds"] if "eval" in r]


def per_class_columns(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{ticket label: {class: AP}} for every evaluated ticket of a run."""
    return {ticket_label(r): dict(r["eval"].get("per_class", {})) for r in evaluated(summary)}


def per_class_markdown(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> str:
    """A Markdown table: one row per class, one column per ticket, AP in percent, mAP last."""
    labels = list(columns)
    lines = ["| class | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name in class_names:
        lines.append(f"| {name} | " + " | ".join(_pct(columns[lab].get(name)) for lab in labels) + " |")
    means = []
    for lab in labels:
        values = [v for v in columns[lab].values() if isinstance(v, (int, float)) and not math.isnan(v)]
        means.append(sum(values) / len(values) if values else None)
    lines.append("| **mAP** | " + " | ".join(f"**{_pct(m)}**" for m in means) + " |")
    return "\n".join(lines)


def plot_per_class(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str], path: str | Path,
                   title: str = "Per-class AP") -> Path:
    """A grouped bar chart of per-class AP, one bar colour per ticket, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(columns)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(class_names) * max(1, len(labels)) / 1.5), 4.5))
    width = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(class_names))]
        ys = [100 * (columns[lab].get(c) or 0.0) if not _isnan(columns[lab].get(c)) else 0.0 for c in class_names]
        ax.bar(xs, ys, width=width, label=lab)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def write_report(run_dir: str | Path, summary: Mapping[str, Any], class_names: Sequence[str],
                 title: str = "COLT detection run") -> Path:
    """Write report.md, per_class_ap.csv/.json and per_class_ap.png for a run's evaluated tickets."""
    run_dir = Path(run_dir)
    columns = per_class_columns(summary)
    method = summary["method"].upper() + (f"-{summary['partitions']}" if summary["method"] == "colt" else "")
    parts = [f"# {title}: {method}", "", "## Rounds", "", rounds_markdown(summary), ""]
    if columns:
        parts += ["## Per-class AP (%)", "", per_class_markdown(columns, class_names), "",
                  "![per-class AP](per_class_ap.png)", ""]
        plot_per_class(columns, class_names, run_dir / "per_class_ap.png", f"Per-class AP, {method}")
    atomic_write_text("\n".join(parts), run_dir / "report.md")
    atomic_write_text(rounds_csv(summary), run_dir / "rounds.csv")
    atomic_write_json({ticket_label(r): {"round": r["round"], "sparsity": r["sparsity"],
                                          "metric": r["eval"].get("metric"), "mAP": r["eval"].get("value"),
                                          "per_class": r["eval"].get("per_class", {})}
                       for r in evaluated(summary)}, run_dir / "per_class_ap.json")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["class", *columns])
    for name in class_names:
        writer.writerow([name, *(f"{columns[c].get(name, float('nan')):.6f}" for c in columns)])
    atomic_write_text(out.getvalue(), run_dir / "per_class_ap.csv")
    return run_dir / "report.md"
