"""The reports' plots, written atomically as PNG: a per-class bar chart, and the comparison's Fig. 5 (metric and
rounds against sparsity) and Fig. 7 (pruned-weight similarity)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_bytes
from colt_core.numbers import as_number
from colt_core.report.compared_runs import ComparedRun
from colt_core.report.comparison_rows import control_names
from colt_core.report.series import Series, Spread, group_series, series_round_rows

# Fig. 5 line format of each control, in the order of the controls' columns (colour: the run's or series').
CONTROL_FORMATS = (":^", "-.v", ":D")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: plots are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` as PNG atomically (a killed run leaves no half-written image) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def plot_per_class(columns: Mapping[str, Mapping[str, float]], class_names: Sequence[str], path: str | Path,
                   title: str = "Per-class metric", ylabel: str = "value (%)") -> Path:
    """A grouped bar chart of a per-class metric, one bar colour per ticket, written atomically as PNG."""
    plt = pyplot()
    labels = list(columns)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(class_names) * max(1, len(labels)) / 1.5), 4.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(class_names))]
        ys = [100 * (as_number(columns[label].get(c)) or 0.0) for c in class_names]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def series_colours(series: Sequence[Series]) -> dict[str, str]:
    """One colour per series: the paper's red for the first LTH series and green for the first COLT one."""
    preferred = {"lth": "tab:red", "colt": "tab:green"}
    others = iter(c for c in pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
                  if c not in ("#d62728", "#2ca02c"))
    colours: dict[str, str] = {}
    for s in series:
        colour = preferred.pop(s.method, None)
        colours[s.label] = colour or next(others, "black")
    return colours


def _band(rows: Sequence[Mapping[str, Any]], name: str) -> tuple[list[float], list[float]]:
    """Mean − std and mean + std of the rows' `name` in percent (the mean alone where there is no std)."""
    spreads = [Spread.from_columns(row, name) for row in rows]
    return ([100 * (s.mean - (s.std or 0.0)) for s in spreads], [100 * (s.mean + (s.std or 0.0)) for s in spreads])


def _plot_spread(ax: Any, rows: Sequence[Mapping[str, Any]], name: str, fmt: str, colour: str, label: str,
                 band: bool) -> None:
    """A line of the rows' mean `name` against their mean sparsity, with a band of ± one std if asked."""
    rows = [row for row in rows if row[f"{name}_n"]]
    if not rows:
        return
    xs = [100 * row["sparsity_mean"] for row in rows]
    ax.plot(xs, [100 * row[f"{name}_mean"] for row in rows], fmt, color=colour, label=label)
    if band:
        ax.fill_between(xs, *_band(rows, name), color=colour, alpha=0.15, linewidth=0)


def plot_metric_and_rounds(runs: Sequence[ComparedRun], path: str | Path, title: str = "") -> Path:
    """Fig. 5: ticket metric (solid, left axis), its controls (dotted) and rounds taken (dashed, right axis)
    against sparsity; one line per series: a run's own, or the mean of several seeds in a band of ± one std."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    rounds_ax = ax.twinx()
    series = group_series(runs)
    colours = series_colours(series)
    controls = control_names(runs)
    metric_names = sorted({r.metric for run in runs for r in run.evaluated if r.metric})
    for s in series:
        colour = colours[s.label]
        rows = series_round_rows([s], controls)
        metric = next((row["metric"] for row in rows if row["value_n"]), None)
        band = len(s.runs) > 1
        _plot_spread(ax, rows, "value", "-o", colour, f"{s.label} {metric or 'metric'}", band)
        for name, fmt in zip(controls, itertools.cycle(CONTROL_FORMATS)):
            _plot_spread(ax, rows, name, fmt, colour, f"{s.label} {name}", band)
        rounds = [row["round"] for row in rows]
        rounds_ax.plot([100 * row["sparsity_mean"] for row in rows], rounds, "--s", color=colour, alpha=0.8,
                       markersize=4, label=f"{s.label} rounds")
        if band:
            rounds_ax.fill_betweenx(rounds, *_band(rows, "sparsity"), color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("sparsity of the prunable weights (%)")
    ax.set_ylabel(f"{' / '.join(metric_names) or 'metric'} (%)")
    rounds_ax.set_ylabel("pruning rounds")
    rounds_ax.yaxis.get_major_locator().set_params(integer=True)
    handles = ax.get_legend_handles_labels()
    more = rounds_ax.get_legend_handles_labels()
    # Below the axes: the lines of both y axes span the whole plot, so no corner inside is free.
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper center",
              bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    bands = "\nseries of several seeds: mean, shaded ± one std" if any(len(s.runs) > 1 for s in series) else ""
    ax.set_title(title or f"Ticket metric (solid) and pruning rounds (dashed) against sparsity{bands}")
    fig.tight_layout()
    return save_png(fig, path)


def plot_similarity(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Fig. 7: similarity of the pruned weights as bars and the rounds each method took, against the
    reference's sparsity (with the extra rounds the reference took under each)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(range(len(rows)))
    ref = rows[0]["reference"] if rows else "reference"
    other = rows[0]["other"] if rows else "other"
    ax.bar(xs, [100 * r["similarity"] for r in rows], color="tab:blue", alpha=0.75,
           label="pruned by both / all parameters")
    ax.set_xticks(xs)
    # The extra rounds the reference needed sit under each sparsity, where no line can hide them.
    ax.set_xticklabels([f"{100 * r['reference_sparsity']:.1f}\n{r['extra_rounds']:+d}" for r in rows])
    ax.set_xlabel(f"sparsity of the {ref} ticket (%), and the extra rounds {ref} took")
    ax.set_ylabel("pruned-weight similarity (%)")
    ax.set_ylim(0, 100)
    rounds_ax = ax.twinx()
    rounds_ax.plot(xs, [r["reference_round"] for r in rows], "-o", color="tab:red", label=f"rounds {ref}")
    rounds_ax.plot(xs, [r["other_round"] for r in rows], "-o", color="tab:green", label=f"rounds {other}")
    rounds_ax.set_ylabel("pruning rounds")
    rounds_ax.set_ylim(bottom=0)
    rounds_ax.yaxis.get_major_locator().set_params(integer=True)
    handles = ax.get_legend_handles_labels()
    more = rounds_ax.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper left")
    ax.set_title(title or f"Pruned weights common to {ref} and {other}")
    fig.tight_layout()
    return save_png(fig, path)
