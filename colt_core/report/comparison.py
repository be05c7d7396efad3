"""Comparing runs of one setup (COLT-N against LTH): the writer of comparison.md, its CSV tables, comparison.json
and the Fig. 5 / Fig. 7 plots, with a series section for several seeds and a per-class section for the tasks
whose report style asks for one.

Runs whose configs differ only in their seed form a *series*; a series of several seeds adds mean ± sample
standard deviation tables and bands in Fig. 5, so a difference between methods can be told from seed noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colt_core.io import atomic_write_json, atomic_write_text
from colt_core.report.compared_runs import ComparedRun, CompareError
from colt_core.report.comparison_markdown import (
    metric_markdown,
    rounds_to_sparsity_markdown,
    runs_markdown,
    search_markdown,
    series_markdown,
    series_metric_markdown,
    series_rounds_to_sparsity_markdown,
    similarity_markdown,
    wall_time_markdown,
)
from colt_core.report.comparison_rows import (
    DEFAULT_LEVELS,
    control_names,
    metric_rows,
    rounds_to_sparsity,
    search_rows,
    series_levels,
    sparsity_levels,
    wall_time_rows,
    write_csv,
)
from colt_core.report.per_class_comparison import per_class_style, write_per_class_section
from colt_core.report.plots import plot_metric_and_rounds, plot_similarity
from colt_core.report.series import (
    IGNORED_CONFIG_KEYS,
    Spread,
    config_differences,
    group_series,
    seed_series,
    series_round_rows,
    series_rounds_to_sparsity,
    series_rows,
)
from colt_core.report.similarity import comparison_pairs, similarity_rows

log = logging.getLogger(__name__)

CONTROLS_TEXT = ("The last columns are the ticket's controls, trained and evaluated with its recipe: random_prune, a "
                 "random mask with the ticket's per-layer counts from the ticket's start weights; random_reinit, the "
                 "ticket's mask on a fresh initialisation.")


def check_out_dir(runs: Sequence[ComparedRun], out_dir: str | Path) -> None:
    """Refuse an output folder that is one of the runs: the comparison's files would replace its report's."""
    if any(Path(out_dir).resolve() == run.path.resolve() for run in runs):
        raise CompareError(f"--out {out_dir} is one of the runs; its report files would be replaced, choose "
                           "another folder")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "run"


def write_series(runs: Sequence[ComparedRun], out_dir: Path, levels: Sequence[float], controls: Sequence[str]
                 ) -> tuple[list[str], dict[str, Path], dict[str, Any]]:
    """The series section of comparison.md, its CSV files and its comparison.json entries; nothing at all when
    no series has several seeds, so a comparison of single runs reads as before."""
    series = seed_series(runs)
    if not series:
        return [], {}, {}
    listing = series_rows(group_series(runs))
    per_round = series_round_rows(series, controls)
    r2s = series_rounds_to_sparsity(series, levels)
    files = {"series_metric_csv": write_csv(out_dir / "series_metric.csv", per_round,
                                            ["series", "round", *Spread.keys("sparsity"), "metric",
                                             *Spread.keys("value"), *(k for c in controls for k in Spread.keys(c))]),
             "series_rounds_csv": write_csv(out_dir / "series_rounds_to_sparsity.csv", r2s,
                                            ["level", "series", "seeds", *Spread.keys("rounds")])}
    parts = ["## Series: mean ± std over seeds", "",
             "Runs whose configs differ only in seed (and output_dir) form a series. Each cell is the mean ± "
             "the sample standard deviation (n − 1) over the series' seeds, with n, the number of seeds it is "
             "over; no ± where n = 1. Fig. 5 draws each series of several seeds as its mean, shaded ± one std.",
             "", series_markdown(listing), "",
             "### Rounds to reach each sparsity", "",
             "The first round whose mask is at least that sparse, over the seeds that reached it.", "",
             series_rounds_to_sparsity_markdown(series, r2s), "",
             "### Sparsity and ticket metric per round", "",
             "Sparsity over the seeds that have the round; the ticket's value, and each control's, over the "
             "seeds that evaluated it.", "",
             series_metric_markdown(per_round, controls), ""]
    return parts, files, {"series": listing, "series_metric": per_round, "series_rounds_to_sparsity": r2s}


def write_similarity(runs: Sequence[ComparedRun], out_dir: Path
                     ) -> tuple[list[str], dict[str, Path], list[dict[str, Any]]]:
    """The Fig. 7 section of comparison.md, its plots and similarity.csv, and its rows for comparison.json."""
    parts: list[str] = []
    files: dict[str, Path] = {}
    similarity: list[dict[str, Any]] = []
    pairs = comparison_pairs(runs)
    if pairs:
        parts += ["## Pruned-weight similarity (Fig. 7)", "",
                  "For each pruned round of the reference run, the other run's mask of the closest sparsity; "
                  "similarity = weights pruned by both / all parameters of the model.", ""]
    for i, (ref, other) in enumerate(pairs):
        try:
            rows = similarity_rows(ref, other)
        except CompareError as exc:
            log.warning("Fig. 7 skipped for %s vs %s: %s", ref.label, other.label, exc)
            parts += [f"{ref.label} vs {other.label}: skipped ({exc})", ""]
            continue
        similarity += rows
        suffix = "" if len(pairs) == 1 else f"_{_slug(ref.label)}_vs_{_slug(other.label)}"
        key = "fig7" if len(pairs) == 1 else f"fig7_{i}"
        parts += [f"### {ref.label} vs {other.label}", "", similarity_markdown(rows), ""]
        if rows:
            files[key] = plot_similarity(rows, out_dir / f"fig7_similarity{suffix}.png")
            parts += [f"![Fig. 7 style: pruned-weight similarity]({files[key].name})", ""]
    files["similarity_csv"] = write_csv(out_dir / "similarity.csv", similarity,
                                        ["reference", "reference_round", "reference_sparsity", "other",
                                         "other_round", "other_sparsity", "similarity", "extra_rounds"])
    return parts, files, similarity


def _opening(runs: Sequence[ComparedRun], diffs: Sequence[str], r2s: list[dict[str, Any]],
             metrics: list[dict[str, Any]], controls: Sequence[str], fig5: Path) -> list[str]:
    """comparison.md from its title to Fig. 5: the runs, rounds to each sparsity, the metric against sparsity."""
    parts = [f"# Comparison: {' vs '.join(r.label for r in runs)}", ""]
    if diffs:
        parts += [f"> **Warning:** the configs differ beyond {', '.join(IGNORED_CONFIG_KEYS)} at: "
                  f"{', '.join(diffs)}. The runs may not be of the same setup.", ""]
    parts += ["## Runs", "", runs_markdown(runs), "",
              "## Rounds to reach each sparsity", "",
              "The first round whose mask is at least that sparse (sparsity over the prunable weights, from "
              "each round's sparsity.json), the sparsity it has, and the wall time of the trainings before "
              "it.",
              "", rounds_to_sparsity_markdown(runs, r2s), "",
              "## Ticket metric against sparsity", ""]
    if controls:
        parts += [CONTROLS_TEXT, ""]
    parts += [metric_markdown(metrics, controls) if metrics else "(no evaluated tickets)", "",
              f"![Fig. 5 style: metric and rounds against sparsity]({fig5.name})", ""]
    return parts


def _run_entries(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """comparison.json's "runs": what each run is and how long its search and evaluations took."""
    return [{"label": r.label, "path": str(r.path), "method": r.method, "partitions": r.partitions,
             "finished": r.finished, "total_search_time_s": r.total_search_time_s,
             "total_eval_time_s": r.total_eval_time_s} for r in runs]


SEARCH_NOTE = ("Search time: the wall time of the search trainings (COLT's partitions, LTH's rounds) up to the run's "
               "last round, counted as they ran (one after another in one process, side by side under torchrun); "
               "ticket evaluations and controls are not search. Without the stop: had every early-bird training "
               "run all its epochs (its time per epoch × the epochs set). The ratio is to the compared LTH run's "
               "search time (the same seed's when there is one).")


def write_comparison(runs: Sequence[ComparedRun], out_dir: str | Path, levels: Sequence[float] = DEFAULT_LEVELS
                     ) -> dict[str, Path]:
    """Write comparison.md, CSV tables, comparison.json and the Fig. 5 / Fig. 7 PNGs, and the per-class
    section where a run's task style asks for it; return the paths."""
    if not runs:
        raise CompareError("no runs to compare")
    out_dir = Path(out_dir)
    check_out_dir(runs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    style = per_class_style(runs)
    per_class, files = write_per_class_section(runs, out_dir, style) if style is not None else (None, {})
    r2s = rounds_to_sparsity(runs, sparsity_levels(runs, levels))
    controls = control_names(runs)
    metrics, times, diffs = metric_rows(runs, controls), wall_time_rows(runs), config_differences(runs)
    if diffs:
        log.warning("the runs' configs differ beyond %s at: %s", ", ".join(IGNORED_CONFIG_KEYS), ", ".join(diffs))
    files["rounds_csv"] = write_csv(out_dir / "rounds_to_sparsity.csv", r2s,
                                    ["level", "run", "method", "rounds", "sparsity", "prune_rate", "search_time_s"])
    files["metric_csv"] = write_csv(out_dir / "metric_vs_sparsity.csv", metrics,
                                    ["run", "round", "sparsity", "prune_rate", "metric", "value", *controls])
    files["wall_time_csv"] = write_csv(out_dir / "wall_time.csv", times,
                                       ["run", "round", "sparsity", "search_time_s", "eval_time_s", "wall_time_s",
                                        "cumulative_s"])
    files["fig5"] = plot_metric_and_rounds(runs, out_dir / "fig5_metric_rounds_vs_sparsity.png")
    parts = _opening(runs, diffs, r2s, metrics, controls, files["fig5"])
    series_parts, series_files, series_json = write_series(runs, out_dir, series_levels(runs, levels), controls)
    search = search_rows(runs)
    files["search_csv"] = write_csv(out_dir / "search.csv", search, list(search[0]) if search else ["run"])
    parts += [*series_parts, "## Search cost", "", SEARCH_NOTE, "", search_markdown(search), "",
              "## Wall time per round", "", wall_time_markdown(times), ""]
    files.update(series_files)
    similarity_parts, similarity_files, similarity = write_similarity(runs, out_dir)
    parts += similarity_parts
    files.update(similarity_files)
    if per_class is not None:
        parts += [per_class, ""]
    files["markdown"] = out_dir / "comparison.md"
    atomic_write_text("\n".join(parts), files["markdown"])
    files["json"] = out_dir / "comparison.json"
    atomic_write_json(json.loads(json.dumps({
        "runs": _run_entries(runs), "config_differences": diffs, "rounds_to_sparsity": r2s,
        "metric_vs_sparsity": metrics, "wall_time": times, "search": search, "similarity": similarity,
        **series_json}, default=str)),
        files["json"])
    return files
