"""Compare COLT and LTH runs of one setup: rounds to reach each sparsity, metric against sparsity (with the
tickets' controls), wall time, the paper's Fig. 5 and Fig. 7 plots, and for detection runs the per-class AP
table (the paper's Table VII). Runs that differ only in their seed form a series, shown as mean ± std.

    python tools/compare_runs.py runs/voc_lth runs/voc_colt2 --out runs/compare_voc
    python tools/compare_runs.py runs/lth_s0 runs/lth_s1 runs/colt2_s0 runs/colt2_s1 --out runs/compare_seeds
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core.cli import user_errors  # noqa: E402
from colt_core.report import per_class_markdown, plot_per_class, ticket_label  # noqa: E402
from colt_core.report.compare import (  # noqa: E402
    DEFAULT_LEVELS,
    ComparedRun,
    CompareError,
    matching_tickets,
    read_runs,
    rounds_to_sparsity,
    rounds_to_sparsity_markdown,
    seed_series,
    series_levels,
    series_rounds_to_sparsity,
    series_rounds_to_sparsity_markdown,
    sparsity_levels,
    write_comparison,
    write_csv,
)


def is_detection_run(run: ComparedRun) -> bool:
    """A detection run by its ticket's architecture or, before the ticket exists, by its metric (mAP)."""
    from colt_det.export import is_detection_architecture

    if run.architecture is not None:
        return is_detection_architecture(run.architecture)
    return any("mAP" in (r.metric or "") for r in run.evaluated)


def write_per_class(runs: Sequence[ComparedRun], out_dir: Path) -> tuple[str, dict[str, Path]]:
    """Per-class AP of the dense model and each run's ticket at matching sparsity (Markdown, CSV, PNG)."""
    from colt_det.report import REPORT

    dense, tickets = matching_tickets(runs)
    columns: dict[str, dict[str, float]] = {}
    if dense is not None:
        columns[ticket_label(dense[1])] = dense[1].per_class
    for run, rec in tickets:
        columns[f"{run.label} {ticket_label(rec)}"] = rec.per_class
    if not columns:
        return "## Per-class AP\n\n(no run has an evaluated ticket with per-class AP)", {}
    class_names = runs[0].class_names or sorted({c for col in columns.values() for c in col})
    metric = next((r.metric for run in runs for r in run.evaluated if r.metric), "AP")
    title = f"Per-class AP ({metric}): dense model and tickets at matching sparsity"
    files = {"per_class_png": plot_per_class(columns, class_names, out_dir / "per_class_ap.png", title,
                                             REPORT.per_class_axis)}
    rows = [{"class": name, **{label: col.get(name) for label, col in columns.items()}}
            for name in class_names]
    files["per_class_csv"] = write_csv(out_dir / "per_class_ap.csv", rows, ["class", *columns])
    dense_text = f"the dense model (round 0 of {dense[0].label})" if dense else "no dense model"
    text = "\n".join(["## Per-class AP (%) at matching sparsity (Table VII)", "",
                      f"Columns: {dense_text}, and each run's evaluated ticket closest to the highest "
                      "sparsity that every run evaluated.", "",
                      per_class_markdown(columns, class_names, digits=REPORT.digits, mean_row=REPORT.mean_row), "",
                      "![per-class AP](per_class_ap.png)"])
    return text, files


def parse_levels(text: str) -> list[float]:
    """Comma-separated sparsity levels as fractions (0.79) or percents (79)."""
    levels = []
    for part in text.split(","):
        part = part.strip().rstrip("%")
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number; e.g. 20,40,79 or 0.2,0.4,0.79") from None
        value = value / 100 if value > 1 else value
        if not 0 < value < 1:
            raise click.BadParameter(f"{part} is not a sparsity between 0 and 100%")
        levels.append(value)
    return levels


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for tables and plots")
@click.option("--label", "labels", multiple=True, help="a name per run, in order (default: LTH, COLT-2, …)")
@click.option("--levels", default=",".join(f"{100 * x:g}" for x in DEFAULT_LEVELS), show_default=True,
              help="sparsity levels (%) for the rounds-to-sparsity table, besides each run's own")
def main(runs: tuple[str, ...], out: str, labels: tuple[str, ...], levels: str) -> None:
    """Compare RUNS (run directories of the same setup) side by side into --out."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    level_values = parse_levels(levels)
    out_dir = Path(out)
    with user_errors():
        records = read_runs(runs, labels)
        if any(out_dir.resolve() == r.path.resolve() for r in records):
            raise CompareError(f"--out {out_dir} is one of the runs; its report files would be replaced, "
                               "choose another folder")
        sections: list[str] = []
        extra: dict[str, Path] = {}
        if any(is_detection_run(r) for r in records):
            out_dir.mkdir(parents=True, exist_ok=True)
            text, extra = write_per_class(records, out_dir)
            sections.append(text)
        files = write_comparison(records, out_dir, level_values, sections, extra)
    all_levels = sparsity_levels(records, level_values)
    click.echo("rounds to reach each sparsity (round, sparsity reached, search time):")
    click.echo(rounds_to_sparsity_markdown(records, rounds_to_sparsity(records, all_levels)))
    series = seed_series(records)
    if series:
        click.echo("\nrounds to reach each sparsity, mean ± sample std (n − 1) over the seeds that reached it:")
        rows = series_rounds_to_sparsity(series, series_levels(records, level_values))
        click.echo(series_rounds_to_sparsity_markdown(series, rows))
    click.echo("\nwritten:")
    for path in files.values():
        click.echo(f"  {path}")


if __name__ == "__main__":
    main()
