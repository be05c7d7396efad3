"""A task's figure in a run's report: which evaluations it sets side by side, how it is rendered to bytes
that depend on nothing but its inputs, and the report.md lines that link it.

The task draws it (its registry entry's `report_figure`) from what its evaluations saved beside their metrics
(`TrainingDir.preview`); the engine only says which evaluations and links the PNG.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colt_core.config import ConfigError, read_yaml
from colt_core.io import read_json
from colt_core.registry import UnknownTaskError, task_of_config
from colt_core.report.per_class import ticket_label
from colt_core.report.plots import pyplot
from colt_core.rundir import RoundRecord, RunDir, RunSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFigure:
    """A PNG a task drew for a run's report, and the sentence under it (what it shows, its thresholds)."""

    path: Path
    title: str  # the report section's heading and the image's alt text
    caption: str


def dense_and_final(summary: RunSummary) -> list[RoundRecord]:
    """The evaluations a run's figure compares: the dense model (round 0) and the last evaluated sparse ticket,
    each where it was evaluated, in that order."""
    chosen = [r for r in summary.evaluated if r.round == 0][:1]
    sparse = [r for r in summary.evaluated if r.round > 0]
    return chosen + sparse[-1:]


def saved_previews(run: RunDir, summary: RunSummary) -> list[tuple[str, Any]]:
    """(column label, preview) of the `dense_and_final` evaluations that saved a preview, labelled as the
    per-class table labels them ("dense", "round 2 (73.4% sparse)"); evaluations older than previews are left
    out."""
    found = []
    for record in dense_and_final(summary):
        path = run.round(record.round).eval.preview
        if path.is_file():
            found.append((ticket_label(record), read_json(path)))
    return found


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes without matplotlib's Software stamp (the same figure drawn again gives
    the same bytes), the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


def run_figure(run: RunDir, summary: RunSummary) -> ReportFigure | None:
    """The figure the run's task draws for its report (looked up by the task of its config.yaml); None where
    the task draws none, the run has no config, or its task is not registered here."""
    if not run.config.is_file():
        return None
    try:
        entry = task_of_config(read_yaml(run.config), str(run.config))
    except (ConfigError, UnknownTaskError) as exc:
        log.warning("%s; the report has no figure", exc)
        return None
    return entry.report_figure(run, summary) if entry.report_figure is not None else None


def figure_section(run: RunDir, summary: RunSummary) -> list[str]:
    """report.md's section with the task's figure: a heading, the image link and its caption (none without a
    figure)."""
    figure = run_figure(run, summary)
    if figure is None:
        return []
    return [f"## {figure.title}", "", f"![{figure.title}]({figure.path.name})", "", figure.caption, ""]
