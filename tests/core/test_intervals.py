"""The seeded percentile bootstrap, intervals in the run records, and every report that shows them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from colt_core.intervals import Bootstrap, percentile_interval
from colt_core.numbers import as_interval, percent_interval
from colt_core.report import ReportStyle, given_ticket_markdown, rounds_csv, rounds_markdown, write_report
from colt_core.report.compared_runs import ComparedRound, ComparedRun
from colt_core.report.comparison_markdown import metric_markdown, runs_markdown
from colt_core.report.comparison_rows import metric_rows, write_csv
from colt_core.report.given_ticket import write_given_ticket_report
from colt_core.report.rounds_table import interval_note
from colt_core.rundir import Evaluation, RoundRecord, RunDir, RunSummary

METHOD = "bootstrap, 1000 resamples of test images, 95% percentile"


# ----- the bootstrap ---------------------------------------------------------------------------------
def test_the_interval_is_the_percentile_interval_of_the_resampled_means_worked_out_by_hand():
    values = [1.0, 0.0, 1.0, 1.0]
    bootstrap = Bootstrap(seed=7, resamples=5, confidence=0.8)
    # The same generator, drawn by hand: resample b is the b-th call rng.integers(0, 4, size=4).
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, 4, size=4) for _ in range(5)]
    means = sorted(sum(values[i] for i in d) / 4 for d in draws)
    # Linear interpolation at positions 0.1 * 4 = 0.4 and 0.9 * 4 = 3.6 of the five sorted means.
    lo = means[0] + 0.4 * (means[1] - means[0])
    hi = means[3] + 0.6 * (means[4] - means[3])
    assert bootstrap.mean_interval(values) == pytest.approx([lo, hi], abs=1e-15)
    assert [c.tolist() for c in bootstrap.counts(4)] == [np.bincount(d, minlength=4).tolist() for d in draws]
    assert lo < hi  # these draws are not all alike


def test_a_case_enumerable_exactly():
    # Two items, one right: a resample's mean is 0, 1/2 or 1 with chance 1/4, 1/2, 1/4; the 90% interval of many
    # resamples runs from the 5% quantile (0) to the 95% one (1), the 50% interval is [0.5, 0.5].
    assert Bootstrap(seed=0, resamples=4000, confidence=0.9).mean_interval([0.0, 1.0]) == [0.0, 1.0]
    assert Bootstrap(seed=0, resamples=4000, confidence=0.5).mean_interval([0.0, 1.0]) == [0.5, 0.5]
    assert Bootstrap(seed=3).mean_interval([1.0, 1.0, 1.0]) == [1.0, 1.0]


def test_same_seed_same_interval_another_seed_another():
    values = (np.random.default_rng(1).random(300) < 0.7).astype(float)
    first = Bootstrap(seed=11).mean_interval(values)
    assert Bootstrap(seed=11).mean_interval(values) == first
    assert Bootstrap(seed=12).mean_interval(values) != first
    assert first[0] < values.mean() < first[1]


@pytest.mark.parametrize("n", [4, 7, 300])
def test_it_is_scipys_percentile_bootstrap_with_the_same_generator(n):
    hits = (np.random.default_rng(n).random(n) < 0.6).astype(float)
    scores = np.random.default_rng(n).random(n)
    for values in (hits, scores):
        ours = Bootstrap(seed=5).mean_interval(values)
        theirs = scipy.stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile", batch=1,
                                       rng=np.random.default_rng(5)).confidence_interval
        if values is hits:  # means of 0/1 values are exact: the same interval to the bit
            assert ours == [theirs.low, theirs.high]
        else:  # sums of fractions may differ in the last bit
            assert ours == pytest.approx([theirs.low, theirs.high], rel=1e-14)


def test_several_statistics_share_the_resamples():
    values = np.random.default_rng(3).random(20)
    bootstrap = Bootstrap(seed=4)
    both = bootstrap.intervals(lambda c: (float(np.sum(c * values)) / 20, float(np.sum(c * values ** 2)) / 20), 20)
    assert both[0] == bootstrap.mean_interval(values) and both[1] == bootstrap.mean_interval(values ** 2)


def test_undefined_resamples_are_left_out_and_bad_settings_refused():
    assert percentile_interval([math.nan, 1.0, 2.0, 3.0], 0.5) == percentile_interval([1.0, 2.0, 3.0], 0.5)
    assert percentile_interval([math.nan, math.nan]) is None
    assert Bootstrap(seed=0, resamples=20).interval(lambda counts: math.nan, 3) is None
    with pytest.raises(ValueError, match="resamples >= 1"):
        Bootstrap(seed=0, resamples=0)
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        Bootstrap(seed=0, confidence=1.0)
    with pytest.raises(ValueError, match="at least one item"):
        Bootstrap(seed=0).mean_interval([])
    assert Bootstrap(seed=0).method() == METHOD


def test_numbers_read_and_show_intervals():
    assert as_interval([0.1, 0.2]) == (0.1, 0.2) and as_interval((1, 2)) == (1.0, 2.0)
    for bad in (None, [0.1], [0.1, None], "ab", [True, 0.2], {"lo": 0.1, "hi": 0.2}):
        assert as_interval(bad) is None
    assert percent_interval(0.706, [0.671, 0.738]) == "70.60 [67.10, 73.80]"
    assert percent_interval(0.706, [0.671, 0.738], digits=1) == "70.6 [67.1, 73.8]"
    assert percent_interval(0.706, None) == "70.60" and percent_interval(None, [0.1, 0.2]) == ""


# ----- records and reports ---------------------------------------------------------------------------
def _evaluation(value: float, interval: list[float] | None, **details) -> Evaluation:
    metrics = {"metric": "voc07 mAP", "value": value, "per_class": {"cat": value, "dog": value},
               "test_images": 300, "test_per_class": {"cat": 120, "dog": 95}, **details}
    if interval is not None:
        metrics.update(interval=interval, interval_method=METHOD)
    return Evaluation.from_task(metrics)


def _summary(with_intervals: bool) -> RunSummary:
    interval = (lambda lo, hi: [lo, hi]) if with_intervals else (lambda lo, hi: None)
    coco = {"mAP": 0.31, "AP50": 0.61, **({"interval": [0.29, 0.35], "AP50_interval": [0.58, 0.66]}
                                          if with_intervals else {})}
    return RunSummary("colt", 2, [
        RoundRecord(0, 0.0, 0.0, evaluation=_evaluation(0.706, interval(0.671, 0.738), coco=coco), wall_time_s=2.0),
        RoundRecord(1, 0.5, 0.45, evaluation=_evaluation(0.69, interval(0.65, 0.72), coco=coco),
                    controls={"random_prune": _evaluation(0.55, interval(0.51, 0.59))}, wall_time_s=3.0),
    ])


STYLE = ReportStyle(title="Test run", per_class_title="Per-class AP (%)", per_class_name="ap",
                    extra_columns={"coco.AP50": "AP50"}, count_title="test objects", mean_row="mAP")


def test_the_records_carry_the_interval_to_summary_json_and_back():
    summary = _summary(True)
    again = RunSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    first = again.rounds[0].evaluation
    assert first.interval() == (0.671, 0.738) and first.interval_method == METHOD
    assert first.interval("coco.AP50") == (0.58, 0.66) and first.interval("coco.mAP") == (0.29, 0.35)
    assert first.interval("top5") is None and first.to_dict()["interval"] == [0.671, 0.738]
    assert _summary(False).rounds[0].evaluation.interval() is None


def test_the_rounds_table_csv_and_json_show_the_intervals(tmp_path: Path):
    summary = _summary(True)
    table = rounds_markdown(summary, STYLE.extra_columns)
    assert "| 0 | 0.00 | 0.00 | 70.60 [67.10, 73.80] | 61.00 [58.00, 66.00] |  | 2.0 |" in table
    assert "| 1 | 50.00 | 45.00 | 69.00 [65.00, 72.00] | 61.00 [58.00, 66.00] | 55.00 [51.00, 59.00] | 3.0 |" in table
    rows = list(csv.DictReader(io.StringIO(rounds_csv(summary, ["coco.AP50"]))))
    assert list(rows[0])[3:9] == ["voc07 mAP", "voc07 mAP_lo", "voc07 mAP_hi", "coco.AP50", "coco.AP50_lo",
                                  "coco.AP50_hi"]
    assert (rows[1]["control:random_prune_lo"], rows[0]["control:random_prune_lo"]) == ("0.51", "")
    run = RunDir(tmp_path)
    write_report(run, summary, ["cat", "dog"], STYLE)
    report = run.report.read_text()
    assert "70.60 [67.10, 73.80]" in report and f"In brackets: the value's interval over its test set ({METHOD})" \
        in report
    assert "| cat | 120 |" in report  # the per-class table keeps its object counts
    stored = json.loads(run.rounds_json.read_text())["rounds"]
    assert (stored[0]["value_lo"], stored[0]["value_hi"]) == (0.671, 0.738)


def test_a_run_recorded_without_intervals_reports_as_before(tmp_path: Path):
    summary = _summary(False)
    table = rounds_markdown(summary, STYLE.extra_columns)
    assert "| 0 | 0.00 | 0.00 | 70.60 | 61.00 |  | 2.0 |" in table and "[" not in table
    header = rounds_csv(summary, ["coco.AP50"]).splitlines()[0]
    assert header == "round,sparsity,prune_rate,voc07 mAP,coco.AP50,control:random_prune,wall_time_s"
    assert interval_note(summary) is None
    run = RunDir(tmp_path)
    write_report(run, summary, ["cat", "dog"], STYLE)
    assert "In brackets" not in run.report.read_text()
    assert "value_lo" not in json.loads(run.rounds_json.read_text())["rounds"][0]


def test_the_given_ticket_report_shows_the_interval(tmp_path: Path):
    ticket = {"path": "runs/x/ticket.pt", "sparsity": 0.5, "prune_rate": 0.45, "architecture": {"name": "conv3"}}
    evaluation = _evaluation(0.706, [0.671, 0.738], ticket=ticket, coco={"AP50": 0.61, "AP50_interval": [0.5, 0.7]})
    table = given_ticket_markdown(evaluation, STYLE)
    assert "| runs/x/ticket.pt | the ticket | 50.00 | 45.00 | 70.60 [67.10, 73.80] | 61.00 [50.00, 70.00] |" in table
    run = RunDir(tmp_path)
    write_given_ticket_report(run, evaluation, ["cat", "dog"], STYLE)
    assert "In brackets" in run.report.read_text()
    old = _evaluation(0.706, None, ticket=ticket, coco={"AP50": 0.61})
    assert "| 70.60 | 61.00 |" in given_ticket_markdown(old, STYLE)


def _compared(label: str, rounds: list[ComparedRound]) -> ComparedRun:
    return ComparedRun(path=Path(label), label=label, method="colt", partitions=2, config={}, rounds=rounds,
                       finished=True, architecture=None, class_names=[])


def _round(r: int, value: float, interval: tuple[float, float] | None, control: float | None = None,
           control_interval: tuple[float, float] | None = None) -> ComparedRound:
    return ComparedRound(round=r, sparsity=0.2 * r, prune_rate=0.2 * r, total_params=100, search_time_s=1.0,
                         eval_time_s=1.0, metric="top-1 accuracy", value=value, interval=interval,
                         controls={} if control is None else {"random_prune": control},
                         control_intervals={} if control_interval is None else {"random_prune": control_interval})


def test_the_comparison_tables_and_csv_show_intervals_and_old_runs_still_compare(tmp_path: Path):
    new = _compared("COLT-2", [_round(0, 0.9, (0.88, 0.92)), _round(1, 0.85, (0.82, 0.87), 0.8, (0.77, 0.83))])
    old = _compared("LTH", [_round(0, 0.91, None), _round(1, 0.86, None, 0.79)])
    rows = metric_rows([new, old], ["random_prune"])
    table = metric_markdown(rows, ["random_prune"])
    assert "| COLT-2 | 1 | 20.00% | 20.00% | top-1 accuracy | 85.00 [82.00, 87.00] | 80.00 [77.00, 83.00] |" in table
    assert "| LTH | 1 | 20.00% | 20.00% | top-1 accuracy | 86.00 | 79.00 |" in table and "In brackets" in table
    assert "top-1 accuracy 85.00 [82.00, 87.00] (round 1)" in runs_markdown([new, old])
    path = write_csv(tmp_path / "metric.csv", rows, ["run", "round", "value", "random_prune"])
    lines = path.read_text().splitlines()
    assert lines[0] == "run,round,value,value_lo,value_hi,random_prune,random_prune_lo,random_prune_hi"
    assert lines[2] == "COLT-2,1,0.85,0.82,0.87,0.8,0.77,0.83" and lines[4] == "LTH,1,0.86,,,0.79,,"
    only_old = metric_rows([old], ["random_prune"])
    assert "[" not in metric_markdown(only_old, ["random_prune"]) and all("value_lo" not in r for r in only_old)
    header = write_csv(tmp_path / "old.csv", only_old, ["run", "value"]).read_text().splitlines()[0]
    assert header == "run,value"
