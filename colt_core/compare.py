"""Comparing runs of one setup (COLT-N against LTH): rounds to reach a sparsity, metric against sparsity,
wall time, and the paper's Fig. 5 and Fig. 7 plots; plus the choice of tickets for a per-class table.

Sparsity is always read from each round's own `sparsity.json` (the mask that round trained under), so
the tables agree with the runs' reports. Task-agnostic: metrics are whatever the front end evaluated.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colt_core.config import ConfigError, flatten, read_yaml
from colt_core.errors import UserError
from colt_core.export import ExportError, read_ticket_header
from colt_core.io import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_json,
)
from colt_core.rundir import RunDir, RunDirError, open_run, read_evaluation, read_summary
from colt_core.sparsity import overall_sparsity, pruned_similarity

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.79, 0.9)
# Keys that legitimately differ between the runs of one setup: what is compared, when a run stops, what it
# evaluates, and where it is written.
IGNORED_CONFIG_KEYS = ("prune.method", "prune.partitions", "prune.rates", "prune.max_rounds",
                       "prune.target_sparsity", "prune.evaluate", "output_dir")
# Sparsities are exact fractions of integer counts; this only absorbs float formatting of a level.
LEVEL_TOLERANCE = 1e-9


class CompareError(UserError, ValueError):
    """Runs cannot be read or compared as asked."""


@dataclass
class ComparedRound:
    """One round of a run: its mask's sparsity, its trainings' wall time, and its ticket's evaluation."""

    round: int
    sparsity: float  # over the prunable weights, from round_XX/sparsity.json
    prune_rate: float | None  # the paper's zeros / all parameters
    total_params: int | None
    search_time_s: float | None  # partition trainings of this round; None: not recorded in summary.json
    eval_time_s: float | None
    metric: str | None = None
    value: float | None = None
    per_class: dict[str, float] = field(default_factory=dict)

    @property
    def wall_time_s(self) -> float | None:
        if self.search_time_s is None:
            return None
        return self.search_time_s + (self.eval_time_s or 0.0)

    @property
    def evaluated(self) -> bool:
        return isinstance(self.value, (int, float))


@dataclass
class ComparedRun:
    """What the comparison reads from one run directory."""

    path: Path
    label: str
    method: str
    partitions: int
    config: dict[str, Any]
    rounds: list[ComparedRound]
    finished: bool
    architecture: dict[str, Any] | None
    class_names: list[str]

    def round_reaching(self, level: float) -> ComparedRound | None:
        """The first round whose mask is at least `level` sparse (None when the run never got there)."""
        for record in self.rounds:
            if record.sparsity >= level - LEVEL_TOLERANCE:
                return record
        return None

    def search_time_before(self, r: int) -> float | None:
        """Wall time of the trainings that produced round `r`'s mask (rounds 0 … r-1)."""
        times = [rec.search_time_s for rec in self.rounds if rec.round < r]
        return None if any(t is None for t in times) else float(sum(times))

    @property
    def evaluated(self) -> list[ComparedRound]:
        return [r for r in self.rounds if r.evaluated]

    @property
    def total_search_time_s(self) -> float:
        return float(sum(r.search_time_s or 0.0 for r in self.rounds))

    @property
    def total_eval_time_s(self) -> float:
        return float(sum(r.eval_time_s or 0.0 for r in self.rounds))


def read_run(path: str | Path, label: str | None = None) -> ComparedRun:
    """Read a run directory's summary, config and every round's sparsity report and evaluation."""
    try:
        run = open_run(path, needs=("summary", "config"))
        summary = read_summary(run)
        config = read_yaml(run.config)
        split = read_json(run.split) if run.split.is_file() else {}
        header = read_ticket_header(run) if run.is_finished() else None
    except (CheckpointError, ConfigError, ExportError, RunDirError) as exc:
        raise CompareError(str(exc)) from None
    stored = {rec.round: rec for rec in summary.rounds}
    rounds = []
    for r in run.rounds():
        rdir = run.round(r)
        rec = stored.get(r)
        evaluation = rec.evaluation if rec is not None else None
        try:
            report = read_json(rdir.sparsity) if rdir.sparsity.is_file() else None
            if report is None:  # killed between writing the mask and its report: recount the mask
                report = {"overall": {"sparsity": overall_sparsity(load_checkpoint(rdir.mask))}}
            if evaluation is None and rdir.eval.metrics.is_file():
                evaluation = read_evaluation(rdir.eval)
        except CheckpointError as exc:
            raise CompareError(str(exc)) from None
        rate = report.get("prune_rate", {})
        rounds.append(ComparedRound(
            round=r, sparsity=float(report["overall"]["sparsity"]), prune_rate=rate.get("rate"),
            total_params=rate.get("all_params"),
            search_time_s=None if rec is None else rec.search_time_s,
            eval_time_s=None if rec is None else (evaluation.wall_time_s if evaluation else 0.0),
            metric=evaluation.metric if evaluation else None, value=evaluation.value if evaluation else None,
            per_class={k: v for k, v in (evaluation.per_class if evaluation else {}).items()
                       if isinstance(v, (int, float))}))
    if not rounds:
        raise CompareError(f"{run.path}: no round_XX/mask.pt on disk; the run has not started")
    return ComparedRun(path=run.path, label=label or summary.label, method=summary.method,
                       partitions=summary.partitions, config=config, rounds=rounds, finished=header is not None,
                       architecture=header["architecture"] if header else None,
                       class_names=list(split.get("class_names", [])))


def read_runs(paths: Sequence[str | Path], labels: Sequence[str] = ()) -> list[ComparedRun]:
    """Read several runs; labels default to the method (LTH, COLT-2), made unique with the folder name."""
    if labels and len(labels) != len(paths):
        raise CompareError(f"{len(labels)} labels given for {len(paths)} runs; give one per run or none")
    runs = [read_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    if not labels:
        for suffix in (lambda i, run: f" ({run.path.name})", lambda i, run: f" #{i + 1}"):
            counts: dict[str, int] = {}
            for run in runs:
                counts[run.label] = counts.get(run.label, 0) + 1
            for i, run in enumerate(runs):
                if counts[run.label] > 1:
                    run.label += suffix(i, run)
    if len({r.label for r in runs}) != len(runs):
        raise CompareError(f"run labels must be unique, got {[r.label for r in runs]}")
    return runs


# ----- configs ---------------------------------------------------------------------------------------
def config_differences(runs: Sequence[ComparedRun], ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> list[str]:
    """Config keys on which some run differs from the first, beyond those a comparison varies."""
    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in ignore)

    first = flatten(runs[0].config)
    keys: list[str] = []
    for run in runs[1:]:
        other = flatten(run.config)
        for key in sorted(set(first) | set(other)):
            if not ignored(key) and first.get(key) != other.get(key) and key not in keys:
                keys.append(key)
    return keys


# ----- tables ----------------------------------------------------------------------------------------
def sparsity_levels(runs: Sequence[ComparedRun], levels: Sequence[float] = DEFAULT_LEVELS) -> list[float]:
    """The given levels plus every sparsity a run's rounds reached (round 0's dense mask left out).

    Levels that the tables would print alike (20% and a run's own 19.99997%) are one level, the lowest of
    them, so that each run whose own sparsity it is counts as reaching it.
    """
    found = [float(x) for x in levels] + [r.sparsity for run in runs for r in run.rounds if r.sparsity > 0]
    lowest: dict[str, float] = {}
    for level in found:
        shown = _pct(level)
        lowest[shown] = min(level, lowest.get(shown, level))
    return sorted(lowest.values())


def rounds_to_sparsity(runs: Sequence[ComparedRun], levels: Sequence[float]) -> list[dict[str, Any]]:
    """Per level and run: the first round at or above it, its sparsity, and the search time to get there."""
    rows = []
    for level in levels:
        for run in runs:
            rec = run.round_reaching(level)
            rows.append({"level": level, "run": run.label, "method": run.method,
                         "rounds": None if rec is None else rec.round,
                         "sparsity": None if rec is None else rec.sparsity,
                         "prune_rate": None if rec is None else rec.prune_rate,
                         "search_time_s": None if rec is None else run.search_time_before(rec.round)})
    return rows


def metric_rows(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """Every evaluated ticket: run, round, both sparsities, metric and value."""
    return [{"run": run.label, "round": r.round, "sparsity": r.sparsity, "prune_rate": r.prune_rate,
             "metric": r.metric, "value": r.value} for run in runs for r in run.evaluated]


def wall_time_rows(runs: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """Wall time per round (partition trainings, ticket evaluation) and the running total per run."""
    rows = []
    for run in runs:
        cumulative = 0.0
        for r in run.rounds:
            cumulative += r.wall_time_s or 0.0
            rows.append({"run": run.label, "round": r.round, "sparsity": r.sparsity,
                         "search_time_s": r.search_time_s, "eval_time_s": r.eval_time_s,
                         "wall_time_s": r.wall_time_s, "cumulative_s": cumulative})
    return rows


def comparison_pairs(runs: Sequence[ComparedRun]) -> list[tuple[ComparedRun, ComparedRun]]:
    """(reference, other) pairs for Fig. 7: each LTH run against each COLT run, else the first vs the rest."""
    lth = [r for r in runs if r.method == "lth"]
    colt = [r for r in runs if r.method != "lth"]
    if lth and colt:
        return [(a, b) for a in lth for b in colt]
    return [(runs[0], other) for other in runs[1:]]


def similarity_rows(reference: ComparedRun, other: ComparedRun) -> list[dict[str, Any]]:
    """Fig. 7: for each pruned round of `reference`, the `other` mask of closest sparsity and the share of
    all parameters that both prune (`pruned_similarity` over every parameter of the model)."""
    candidates = [r for r in other.rounds if r.sparsity > 0]
    rows = []
    for ref in reference.rounds:
        if ref.sparsity <= 0 or not candidates:
            continue
        match = min(candidates, key=lambda r: (abs(r.sparsity - ref.sparsity), r.round))
        if ref.total_params is not None and match.total_params not in (None, ref.total_params):
            raise CompareError(f"{reference.path} and {other.path} prune models of different sizes "
                               f"({ref.total_params} and {match.total_params} parameters)")
        mask_a = load_checkpoint(RunDir(reference.path).round(ref.round).mask)
        mask_b = load_checkpoint(RunDir(other.path).round(match.round).mask)
        try:
            similarity = pruned_similarity(mask_a, mask_b, ref.total_params)
        except ValueError as exc:
            raise CompareError(f"{reference.path} round {ref.round} and {other.path} round {match.round}: "
                               f"{exc}; the runs prune different models") from None
        rows.append({"reference": reference.label, "reference_round": ref.round,
                     "reference_sparsity": ref.sparsity, "other": other.label, "other_round": match.round,
                     "other_sparsity": match.sparsity, "similarity": similarity,
                     "extra_rounds": ref.round - match.round})
    return rows


def matching_tickets(runs: Sequence[ComparedRun]) -> tuple[tuple[ComparedRun, ComparedRound] | None,
                                                          list[tuple[ComparedRun, ComparedRound]]]:
    """The dense model and each run's evaluated ticket at a sparsity all runs reached (the paper's Table VII).

    The level is the highest sparsity that every run with an evaluated sparse ticket has evaluated; each
    run contributes its evaluated ticket closest to it. The dense model is the first run's round 0.
    """
    dense = next(((run, r) for run in runs for r in run.evaluated if r.sparsity == 0 and r.per_class), None)
    sparse = {run.label: [r for r in run.evaluated if r.sparsity > 0 and r.per_class] for run in runs}
    reached = [max(rs, key=lambda r: r.sparsity).sparsity for rs in sparse.values() if rs]
    if not reached:
        return dense, []
    level = min(reached)
    tickets = [(run, min(sparse[run.label], key=lambda r: (abs(r.sparsity - level), r.round)))
               for run in runs if sparse[run.label]]
    return dense, tickets


# ----- formatting ------------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _secs(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def _metric_value(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def runs_markdown(runs: Sequence[ComparedRun]) -> str:
    lines = ["| run | directory | method | partitions | rates | rounds | final sparsity | prune rate | "
             "final metric | search time (s) | eval time (s) | total (s) |",
             "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        last = run.rounds[-1]
        final_eval = run.evaluated[-1] if run.evaluated else None
        rates = ", ".join(f"{k} {v}" for k, v in (run.config.get("prune", {}).get("rates") or {}).items())
        metric = "" if final_eval is None else f"{final_eval.metric} {_metric_value(final_eval.value)} " \
                                               f"(round {final_eval.round})"
        state = "" if run.finished else " (unfinished)"
        lines.append(f"| {run.label} | {run.path} | {run.method}{state} | {run.partitions} | {rates} | "
                     f"{last.round} | {_pct(last.sparsity)} | {_pct(last.prune_rate)} | {metric} | "
                     f"{_secs(run.total_search_time_s)} | {_secs(run.total_eval_time_s)} | "
                     f"{_secs(run.total_search_time_s + run.total_eval_time_s)} |")
    return "\n".join(lines)


def rounds_to_sparsity_markdown(runs: Sequence[ComparedRun], rows: Sequence[Mapping[str, Any]]) -> str:
    """Wide table: one row per level, per run 'rounds (sparsity reached, search time)'."""
    labels = [r.label for r in runs]
    lines = ["| sparsity ≥ | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    by_level: dict[float, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_level.setdefault(row["level"], {})[row["run"]] = row
    for level, cells in by_level.items():
        text = []
        for label in labels:
            row = cells[label]
            if row["rounds"] is None:
                text.append("not reached")
            else:
                time_text = "" if row["search_time_s"] is None else f", {row['search_time_s']:.1f} s"
                text.append(f"{row['rounds']} ({_pct(row['sparsity'])}{time_text})")
        lines.append(f"| {_pct(level)} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def metric_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| run | round | sparsity (prunable weights) | prune rate (all parameters) | metric | "
             "value (%) |", "|---|---:|---:|---:|---|---:|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['round']} | {_pct(row['sparsity'])} | "
                     f"{_pct(row['prune_rate'])} | {row['metric'] or ''} | {_metric_value(row['value'])} |")
    return "\n".join(lines)


def wall_time_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| run | round | sparsity | partition trainings (s) | ticket evaluation (s) | round (s) | "
             "cumulative (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['round']} | {_pct(row['sparsity'])} | "
                     f"{_secs(row['search_time_s'])} | {_secs(row['eval_time_s'])} | "
                     f"{_secs(row['wall_time_s'])} | {_secs(row['cumulative_s'])} |")
    return "\n".join(lines)


def similarity_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no pruned rounds to compare)"
    ref, other = rows[0]["reference"], rows[0]["other"]
    lines = [f"| {ref} round | {ref} sparsity | {other} round (closest sparsity) | {other} sparsity | "
             f"pruned by both / all parameters | extra rounds of {ref} |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['reference_round']} | {_pct(row['reference_sparsity'])} | "
                     f"{row['other_round']} | {_pct(row['other_sparsity'])} | {_pct(row['similarity'])} | "
                     f"{row['extra_rounds']:+d} |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Rows as CSV (empty cells for None), written atomically."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    atomic_write_text(out.getvalue(), path)
    return Path(path)


# ----- plots -----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def run_colours(runs: Sequence[ComparedRun]) -> dict[str, str]:
    """One colour per run: the paper's red for the first LTH run and green for the first COLT run."""
    preferred = {"lth": "tab:red", "colt": "tab:green"}
    others = iter(c for c in _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
                  if c not in ("#d62728", "#2ca02c"))
    colours: dict[str, str] = {}
    for run in runs:
        colour = preferred.pop(run.method, None)
        colours[run.label] = colour or next(others, "black")
    return colours


def plot_metric_and_rounds(runs: Sequence[ComparedRun], path: str | Path, title: str = "") -> Path:
    """Fig. 5: ticket metric (solid, left axis) and rounds taken (dashed, right axis) against sparsity."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    rounds_ax = ax.twinx()
    colours = run_colours(runs)
    metric_names = sorted({r.metric for run in runs for r in run.evaluated if r.metric})
    for run in runs:
        colour = colours[run.label]
        ev = run.evaluated
        if ev:
            ax.plot([100 * r.sparsity for r in ev], [100 * r.value for r in ev], "-o", color=colour,
                    label=f"{run.label} {ev[0].metric or 'metric'}")
        rounds_ax.plot([100 * r.sparsity for r in run.rounds], [r.round for r in run.rounds], "--s",
                       color=colour, alpha=0.8, markersize=4, label=f"{run.label} rounds")
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
    ax.set_title(title or "Ticket metric (solid) and pruning rounds (dashed) against sparsity")
    fig.tight_layout()
    return _save_png(fig, path)


def plot_similarity(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Fig. 7: similarity of the pruned weights as bars and the rounds each method took, against the
    reference's sparsity (with the extra rounds the reference took under each)."""
    plt = _pyplot()
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
    return _save_png(fig, path)


# ----- everything at once ----------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "run"


def write_comparison(runs: Sequence[ComparedRun], out_dir: str | Path, levels: Sequence[float] = DEFAULT_LEVELS,
                     extra_sections: Sequence[str] = (), extra_files: Mapping[str, Path] | None = None
                     ) -> dict[str, Path]:
    """Write comparison.md, CSV tables, comparison.json and the Fig. 5 / Fig. 7 PNGs; return the paths.

    `extra_sections` (Markdown) are appended to comparison.md, e.g. a front end's per-class table.
    """
    if not runs:
        raise CompareError("no runs to compare")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == run.path.resolve() for run in runs):
        raise CompareError(f"--out {out_dir} is one of the runs; its report files would be replaced, choose "
                           "another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = dict(extra_files or {})
    all_levels = sparsity_levels(runs, levels)
    r2s = rounds_to_sparsity(runs, all_levels)
    metrics = metric_rows(runs)
    times = wall_time_rows(runs)
    diffs = config_differences(runs)
    if diffs:
        log.warning("the runs' configs differ beyond %s at: %s", ", ".join(IGNORED_CONFIG_KEYS),
                    ", ".join(diffs))

    files["rounds_csv"] = write_csv(out_dir / "rounds_to_sparsity.csv", r2s,
                                    ["level", "run", "method", "rounds", "sparsity", "prune_rate",
                                     "search_time_s"])
    files["metric_csv"] = write_csv(out_dir / "metric_vs_sparsity.csv", metrics,
                                    ["run", "round", "sparsity", "prune_rate", "metric", "value"])
    files["wall_time_csv"] = write_csv(out_dir / "wall_time.csv", times,
                                       ["run", "round", "sparsity", "search_time_s", "eval_time_s",
                                        "wall_time_s", "cumulative_s"])
    files["fig5"] = plot_metric_and_rounds(runs, out_dir / "fig5_metric_rounds_vs_sparsity.png")

    names = " vs ".join(r.label for r in runs)
    parts = [f"# Comparison: {names}", ""]
    if diffs:
        parts += [f"> **Warning:** the configs differ beyond {', '.join(IGNORED_CONFIG_KEYS)} at: "
                  f"{', '.join(diffs)}. The runs may not be of the same setup.", ""]
    parts += ["## Runs", "", runs_markdown(runs), "",
              "## Rounds to reach each sparsity", "",
              "The first round whose mask is at least that sparse (sparsity over the prunable weights, from "
              "each round's sparsity.json), the sparsity it has, and the wall time of the trainings before "
              "it.",
              "", rounds_to_sparsity_markdown(runs, r2s), "",
              "## Ticket metric against sparsity", "",
              metric_markdown(metrics) if metrics else "(no evaluated tickets)", "",
              f"![Fig. 5 style: metric and rounds against sparsity]({files['fig5'].name})", "",
              "## Wall time per round", "", wall_time_markdown(times), ""]

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
    for section in extra_sections:
        parts += [section, ""]
    files["markdown"] = out_dir / "comparison.md"
    atomic_write_text("\n".join(parts), files["markdown"])
    files["json"] = out_dir / "comparison.json"
    atomic_write_json(json.loads(json.dumps({
        "runs": [{"label": r.label, "path": str(r.path), "method": r.method, "partitions": r.partitions,
                  "finished": r.finished, "total_search_time_s": r.total_search_time_s,
                  "total_eval_time_s": r.total_eval_time_s} for r in runs],
        "config_differences": diffs, "rounds_to_sparsity": r2s, "metric_vs_sparsity": metrics,
        "wall_time": times, "similarity": similarity}, default=str)), files["json"])
    return files
