"""`colt compare`: compare COLT and LTH runs of one setup side by side: rounds to reach each sparsity, metric
against sparsity (with the tickets' controls), wall time, the paper's Fig. 5 and Fig. 7 plots, and the per-class
table of the runs whose task's report asks for one (detection's per-class AP, the paper's Table VII). Runs that
differ only in their seed form a series, shown as mean ± std.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from colt_core.cli import user_errors
from colt_core.report import (
    DEFAULT_LEVELS,
    read_runs,
    rounds_to_sparsity,
    rounds_to_sparsity_markdown,
    search_markdown,
    search_rows,
    seed_series,
    series_levels,
    series_rounds_to_sparsity,
    series_rounds_to_sparsity_markdown,
    sparsity_levels,
    write_comparison,
)


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


EXAMPLES = """\b
Examples:
  colt compare runs/voc_lth runs/voc_colt2 --out runs/compare_voc
  colt compare runs/lth_s0 runs/lth_s1 runs/colt2_s0 runs/colt2_s1 --out runs/compare_seeds
  colt compare runs/lth runs/colt2 --out runs/compare --label LTH --label COLT-2 --levels 20,50,79"""


@click.command(name="compare", context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for tables and plots")
@click.option("--label", "labels", multiple=True, help="a name per run, in order (default: LTH, COLT-2, …)")
@click.option("--levels", default=",".join(f"{100 * x:g}" for x in DEFAULT_LEVELS), show_default=True,
              help="sparsity levels (%) for the rounds-to-sparsity table, besides each run's own")
def compare_command(runs: tuple[str, ...], out: str, labels: tuple[str, ...], levels: str) -> None:
    """Compare RUNS (run directories of the same setup) side by side into --out: comparison.md, CSV tables,
    comparison.json and the Fig. 5 / Fig. 7 plots (and a per-class table where the runs' task has one)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    level_values = parse_levels(levels)
    with user_errors():
        records = read_runs(runs, labels)
        files = write_comparison(records, Path(out), level_values)
    click.echo("rounds to reach each sparsity (round, sparsity reached, search time):")
    reached = rounds_to_sparsity(records, sparsity_levels(records, level_values))
    click.echo(rounds_to_sparsity_markdown(records, reached))
    series = seed_series(records)
    if series:
        click.echo("\nrounds to reach each sparsity, mean ± sample std (n − 1) over the seeds that reached it:")
        rows = series_rounds_to_sparsity(series, series_levels(records, level_values))
        click.echo(series_rounds_to_sparsity_markdown(series, rows))
    click.echo("\nsearch cost (search trainings to each run's last round; ratio to the compared LTH run):")
    click.echo(search_markdown(search_rows(records)))
    click.echo("\nwritten:")
    for path in files.values():
        click.echo(f"  {path}")
