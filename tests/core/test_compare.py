"""Comparing a COLT and an LTH run: tables agree with the runs' own files; plots written; configs checked.
Several seeds of each: the series' mean ± std agree with the runs' summaries; controls reach every table."""

import csv
import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from toy import NUM_CLASSES, ToyNet, run_toy

from colt_core.commands.compare import compare_command
from colt_core.config import to_dict
from colt_core.io import read_json
from colt_core.registry import TaskEntry, register_task, unregister_task
from colt_core.report import (
    DEFAULT_LEVELS,
    ComparedRound,
    ComparedRun,
    CompareError,
    ReportStyle,
    config_differences,
    group_series,
    matching_tickets,
    read_run,
    read_runs,
    rounds_to_sparsity,
    rounds_to_sparsity_markdown,
    sparsity_levels,
    write_comparison,
)
from colt_core.rundir import RunDir, prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(out: Path, method: str, max_rounds: int, seed: int = 3) -> Path:
    prune = PruneConfig(method=method, partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.75,
                        max_rounds=max_rounds, evaluate="all")
    split = SplitConfig()
    config = {"seed": seed, "prune": to_dict(prune), "split": to_dict(split)}
    run_dir = prepare_run_dir(out, config, resume=False, overwrite=False)
    run_toy(run_dir, prune, split, seed=seed, epochs=2)
    return run_dir.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return make_run(root / "colt", "colt", 3), make_run(root / "lth", "lth", 4)


def compare_with_the_tool(runs: list[Path], out: Path) -> str:
    """tools/compare_runs.py on the runs into `out`; its printed output."""
    spec = importlib.util.spec_from_file_location("compare_runs_tool", REPO / "tools" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = CliRunner().invoke(module.main, [*map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("compare")
    return out, compare_with_the_tool(list(runs), out)


def own_sparsities(run: Path) -> list[float]:
    """Each round's sparsity as the run's own round_XX/sparsity.json reports it."""
    rounds = sorted(int(p.name[6:]) for p in run.glob("round_*"))
    assert rounds == list(range(len(rounds)))
    return [read_json(run / f"round_{r:02d}" / "sparsity.json")["overall"]["sparsity"] for r in rounds]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_compare_writes_tables_and_plots(compared):
    out, output = compared
    for name in ("comparison.md", "comparison.json", "rounds_to_sparsity.csv", "metric_vs_sparsity.csv",
                 "wall_time.csv", "similarity.csv"):
        assert (out / name).is_file(), name
    for name in ("fig5_metric_rounds_vs_sparsity.png", "fig7_similarity.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
    assert not (out / "per_class_ap.png").exists()  # the toy runs are not detection runs
    text = (out / "comparison.md").read_text()
    assert "# Comparison: COLT-2 vs LTH" in text
    for heading in ("## Runs", "## Rounds to reach each sparsity", "## Ticket metric against sparsity",
                    "## Wall time per round", "## Pruned-weight similarity (Fig. 7)"):
        assert heading in text
    assert "](fig5_metric_rounds_vs_sparsity.png)" in text and "](fig7_similarity.png)" in text
    assert "Warning" not in text  # method, partitions and max_rounds may differ
    assert "| sparsity ≥ | COLT-2 | LTH |" in output


def test_rounds_to_sparsity_match_the_runs_own_sparsity_reports(runs, compared):
    out, _ = compared
    rows = read_csv(out / "rounds_to_sparsity.csv")
    own = {"COLT-2": own_sparsities(runs[0]), "LTH": own_sparsities(runs[1])}
    assert own["COLT-2"][1] > own["LTH"][1]  # the intersection prunes more per round
    levels = {float(r["level"]) for r in rows}
    assert {0.2, 0.4, 0.5, 0.6, 0.7, 0.79, 0.9} <= levels
    assert {s for s in own["COLT-2"] + own["LTH"] if s > 0} <= levels  # each run's own levels
    assert len(rows) == 2 * len(levels)
    for row in rows:
        sparsities = own[row["run"]]
        reached = [r for r, s in enumerate(sparsities) if s >= float(row["level"])]
        if not reached:
            assert row["rounds"] == "" and row["sparsity"] == ""
            continue
        assert int(row["rounds"]) == reached[0]
        assert float(row["sparsity"]) == sparsities[reached[0]]
    for label, sparsities in own.items():
        for r, s in enumerate(sparsities[1:], start=1):
            row = next(x for x in rows if x["run"] == label and float(x["level"]) == s)
            assert int(row["rounds"]) == r


def test_similarity_is_the_share_of_all_parameters_both_masks_prune(runs, compared):
    out, _ = compared
    rows = read_csv(out / "similarity.csv")
    colt, lth = own_sparsities(runs[0]), own_sparsities(runs[1])
    assert [int(r["reference_round"]) for r in rows] == list(range(1, len(lth)))  # LTH is the reference
    all_params = sum(p.numel() for p in ToyNet(NUM_CLASSES).parameters())
    for row in rows:
        ref_r, other_r = int(row["reference_round"]), int(row["other_round"])
        assert row["reference"] == "LTH" and row["other"] == "COLT-2"
        closest = min(range(1, len(colt)), key=lambda r: abs(colt[r] - lth[ref_r]))
        assert other_r == closest and int(row["extra_rounds"]) == ref_r - other_r
        a = torch.load(runs[1] / f"round_{ref_r:02d}" / "mask.pt", weights_only=True)
        b = torch.load(runs[0] / f"round_{other_r:02d}" / "mask.pt", weights_only=True)
        both = sum(int(((~a[k]) & (~b[k])).sum()) for k in a)
        assert float(row["similarity"]) == pytest.approx(both / all_params, abs=1e-12)
        assert 0 < float(row["similarity"]) < 1


def test_metric_and_wall_time_come_from_the_runs(runs, compared):
    out, _ = compared
    metrics = read_csv(out / "metric_vs_sparsity.csv")
    for label, run in zip(("COLT-2", "LTH"), runs):
        summary = read_json(run / "summary.json")
        expected = [(r["round"], r["eval"]["value"]) for r in summary["rounds"]]
        got = [(int(m["round"]), float(m["value"])) for m in metrics if m["run"] == label]
        assert got == expected
        assert all(m["metric"] == "accuracy" for m in metrics)
    data = json.loads((out / "comparison.json").read_text())
    for entry, run in zip(data["runs"], runs):
        summary = read_json(run / "summary.json")
        total = entry["total_search_time_s"] + entry["total_eval_time_s"]
        assert total == pytest.approx(sum(r["wall_time_s"] for r in summary["rounds"]))
        assert entry["total_search_time_s"] > 0
    times = [t for t in read_csv(out / "wall_time.csv") if t["run"] == "LTH"]
    assert float(times[-1]["cumulative_s"]) == pytest.approx(data["runs"][1]["total_search_time_s"]
                                                               + data["runs"][1]["total_eval_time_s"])


def test_config_differences_are_warned(runs, tmp_path):
    other = tmp_path / "other_seed"
    shutil.copytree(runs[1], other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["seed"] = 4
    config["prune"]["max_rounds"] = 9  # a stopping setting: not a different setup
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    records = read_runs([runs[0], other])
    assert config_differences(records) == ["seed"]
    files = write_comparison(records, tmp_path / "out")
    assert "**Warning:** the configs differ" in files["markdown"].read_text()
    assert "seed" in files["markdown"].read_text().split("## Runs")[0]


def test_labels_and_errors(runs, tmp_path):
    copy = tmp_path / "lth_copy"
    shutil.copytree(runs[1], copy)
    assert [r.label for r in read_runs([runs[1], copy, runs[0]])] == ["LTH (lth)", "LTH (lth_copy)", "COLT-2"]
    assert [r.label for r in read_runs([runs[1], runs[1]])] == ["LTH (lth) #1", "LTH (lth) #2"]
    with pytest.raises(CompareError, match="labels must be unique"):
        read_runs([runs[0], runs[1]], ["a", "a"])
    with pytest.raises(CompareError, match="2 labels given for 1 runs"):
        read_runs([runs[0]], ["a", "b"])
    with pytest.raises(CompareError, match="not a COLT run directory"):
        read_run(tmp_path)
    with pytest.raises(CompareError, match="is one of the runs"):
        write_comparison(read_runs([runs[0], runs[1]]), runs[1])
    assert read_runs([runs[0], runs[1]], ["mine", "theirs"])[1].label == "theirs"


def _round(r: int, sparsity: float, per_class: dict | None = None) -> ComparedRound:
    return ComparedRound(round=r, sparsity=sparsity, prune_rate=sparsity, total_params=100, search_time_s=1.0,
                         eval_time_s=0.0, metric="m", value=0.5, per_class=per_class or {"a": 0.5})


def _run(label: str, rounds: list[ComparedRound]) -> ComparedRun:
    return ComparedRun(path=Path(label), label=label, method="colt", partitions=2, config={}, rounds=rounds,
                       finished=True, architecture=None, class_names=["a"])


def test_matching_tickets_pick_the_highest_sparsity_every_run_evaluated():
    lth = _run("LTH", [_round(0, 0.0), _round(1, 0.2), _round(2, 0.36), _round(3, 0.49), _round(4, 0.59)])
    colt = _run("COLT", [_round(0, 0.0), _round(1, 0.3), _round(2, 0.5)])
    dense, tickets = matching_tickets([lth, colt])
    assert dense is not None and dense[0] is lth and dense[1].round == 0
    assert [(run.label, rec.round) for run, rec in tickets] == [("LTH", 3), ("COLT", 2)]
    unevaluated = _run("none", [_round(0, 0.0)])
    dense, tickets = matching_tickets([unevaluated])
    assert dense is not None and tickets == []


def test_a_level_a_run_reaches_exactly_is_listed_once():
    # LTH's first round prunes round(0.2 x n) of n weights: 20% as printed, a hair off as a float.
    lth = _run("LTH", [_round(0, 0.0), _round(1, 0.19999997), _round(2, 0.36)])
    colt = _run("COLT", [_round(0, 0.0), _round(1, 0.2000004), _round(2, 0.5)])
    levels = sparsity_levels([lth, colt], (0.2, 0.4))
    assert levels == [0.19999997, 0.36, 0.4, 0.5]
    rows = rounds_to_sparsity([lth, colt], levels)
    assert [(row["run"], row["rounds"]) for row in rows if row["level"] == levels[0]] == [("LTH", 1), ("COLT", 1)]
    table = rounds_to_sparsity_markdown([lth, colt], rows)
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["20.00%", "36.00%", "40.00%",
                                                                            "50.00%"]


# ----- several seeds and controls -------------------------------------------------------------------------
SEEDS = (0, 1)


def control_value(r: int, seed: int, name: str) -> float:
    """A control's value, made up: it differs per round, seed and control, so each mean and std is its own."""
    return 0.5 + 0.1 * r - 0.07 * seed - (0.2 if name == "random_reinit" else 0.0)


def add_controls(run: Path, seed: int) -> None:
    """Write both controls of every evaluated pruned round into summary.json, as the round loop records them."""
    summary = read_json(run / "summary.json")
    for rec in summary["rounds"]:
        if rec["round"] > 0 and rec.get("eval"):
            rec["controls"] = {name: {**rec["eval"], "value": control_value(rec["round"], seed, name)}
                               for name in ("random_prune", "random_reinit")}
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> dict[str, list[Path]]:
    """Two seeds of COLT-2 and of LTH; the COLT runs' summaries hold both controls of every pruned round."""
    root = tmp_path_factory.mktemp("seeds")
    colt = [make_run(root / f"colt_s{seed}", "colt", 3, seed) for seed in SEEDS]
    lth = [make_run(root / f"lth_s{seed}", "lth", 4, seed) for seed in SEEDS]
    for seed, run in zip(SEEDS, colt):
        add_controls(run, seed)
    return {"COLT-2": colt, "LTH": lth}


@pytest.fixture(scope="module")
def seed_compared(seed_runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("seed_compare")
    return out, compare_with_the_tool([*seed_runs["COLT-2"], *seed_runs["LTH"]], out)


def series_label(method: str) -> str:
    return f"{method} (2 seeds: 0, 1)"


def spread(values: list[float]) -> dict[str, float | int | None]:
    """n, mean and sample std as the test computes them by hand (no std for one value, nothing for none)."""
    return {"n": len(values), "mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def spread_in(row: dict, name: str, parse=lambda v: v) -> dict:
    """A row's NAME_n, NAME_mean and NAME_std (`parse` turns CSV cells back into numbers)."""
    return {k: parse(row[f"{name}_{k}"]) for k in ("n", "mean", "std")}


def csv_number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_seeds_of_one_setup_form_one_series_per_method(seed_runs, seed_compared):
    out, output = seed_compared
    records = read_runs([*seed_runs["COLT-2"], *seed_runs["LTH"]])
    series = group_series(records)
    assert [s.label for s in series] == [series_label("COLT-2"), series_label("LTH")]
    assert [[r.path for r in s.runs] for s in series] == [seed_runs["COLT-2"], seed_runs["LTH"]]
    assert config_differences(records) == []  # seeds differ within each series, alike across them
    data = json.loads((out / "comparison.json").read_text())
    assert [(s["series"], s["method"], s["seeds"]) for s in data["series"]] == [
        (series_label("COLT-2"), "colt", [0, 1]), (series_label("LTH"), "lth", [0, 1])]
    text = (out / "comparison.md").read_text()
    assert "Warning" not in text and "## Series: mean ± std over seeds" in text
    assert "sample standard deviation (n − 1)" in text
    assert f"| sparsity ≥ | {series_label('COLT-2')} | {series_label('LTH')} |" in text
    assert f"| sparsity ≥ | {series_label('COLT-2')} | {series_label('LTH')} |" in output
    data = (out / "fig5_metric_rounds_vs_sparsity.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_series_metric_and_sparsity_are_the_mean_and_std_over_seeds(seed_runs, seed_compared):
    out, _ = seed_compared
    data = json.loads((out / "comparison.json").read_text())
    from_csv = read_csv(out / "series_metric.csv")
    assert len(from_csv) == len(data["series_metric"])
    for method, runs in seed_runs.items():
        summaries = [{rec["round"]: rec for rec in read_json(run / "summary.json")["rounds"]} for run in runs]
        sparsities = [own_sparsities(run) for run in runs]
        rows = [row for row in data["series_metric"] if row["series"] == series_label(method)]
        csv_rows = [row for row in from_csv if row["series"] == series_label(method)]
        assert [row["round"] for row in rows] == list(range(max(map(len, sparsities))))
        for row, csv_row in zip(rows, csv_rows):
            r = row["round"]
            evaluated = [s[r] for s in summaries if r in s and s[r].get("eval")]
            expected = {"sparsity": spread([s[r] for s in sparsities if r < len(s)]),
                        "value": spread([rec["eval"]["value"] for rec in evaluated])}
            for name in ("random_prune", "random_reinit"):
                expected[name] = spread([rec["controls"][name]["value"] for rec in evaluated
                                         if name in rec.get("controls", {})])
            assert expected["value"]["n"] == 2
            assert (expected["random_prune"]["n"] == 2) == (method == "COLT-2" and r > 0)
            for name, stats in expected.items():
                assert spread_in(row, name) == stats, (method, r, name)
                assert spread_in(csv_row, name, csv_number) == {
                    k: None if v is None else float(v) for k, v in stats.items()}, (method, r, name)
            assert row["metric"] == csv_row["metric"] == "accuracy"
    colt_r1 = next(row for row in data["series_metric"] if row["series"] == series_label("COLT-2")
                   and row["round"] == 1)
    mean, std = 100 * colt_r1["random_prune_mean"], 100 * colt_r1["random_prune_std"]
    assert f"| {mean:.2f} ± {std:.2f} (n=2) |" in (out / "comparison.md").read_text()


def test_series_rounds_to_sparsity_are_over_the_seeds_that_reached_each_level(seed_runs, seed_compared):
    out, _ = seed_compared
    data = json.loads((out / "comparison.json").read_text())
    from_csv = read_csv(out / "series_rounds_to_sparsity.csv")
    levels = [row["level"] for row in data["series_rounds_to_sparsity"]]
    # the levels asked for (the defaults) alone: the seeds' own sparsities would be rows of noise
    assert len(from_csv) == len(levels) == 2 * len(DEFAULT_LEVELS) and set(levels) == set(DEFAULT_LEVELS)
    for row, csv_row in zip(data["series_rounds_to_sparsity"], from_csv):
        method = "COLT-2" if row["series"] == series_label("COLT-2") else "LTH"
        firsts = [next((r for r, s in enumerate(own_sparsities(run)) if s >= row["level"] - 1e-9), None)
                  for run in seed_runs[method]]
        expected = spread([r for r in firsts if r is not None])
        assert row["seeds"] == 2 and spread_in(row, "rounds") == expected
        assert spread_in(csv_row, "rounds", csv_number) == {k: None if v is None else float(v)
                                                           for k, v in expected.items()}
    unreached = [row for row in data["series_rounds_to_sparsity"] if row["level"] == 0.9]
    assert [row["rounds_n"] for row in unreached] == [0, 0]  # the runs stop at 75%
    table = (out / "comparison.md").read_text().split("### Rounds to reach each sparsity")[1]
    assert "| 90.00% | not reached | not reached |" in table


def test_controls_reach_the_tables_from_the_summary_or_the_disk(seed_runs, seed_compared, tmp_path):
    out, _ = seed_compared
    metrics = read_csv(out / "metric_vs_sparsity.csv")
    assert list(metrics[0]) == ["run", "round", "sparsity", "prune_rate", "metric", "value", "random_prune",
                                "random_reinit"]
    data = json.loads((out / "comparison.json").read_text())
    labels = {run.path: run.label for run in read_runs([*seed_runs["COLT-2"], *seed_runs["LTH"]])}
    for seed, run in zip(SEEDS, seed_runs["COLT-2"]):
        for rows in (metrics, data["metric_vs_sparsity"]):
            mine = [row for row in rows if row["run"] == labels[run]]
            for row in mine:
                r = int(row["round"])
                for name in ("random_prune", "random_reinit"):
                    got = csv_number(row[name]) if rows is metrics else row[name]
                    assert got == (None if r == 0 else control_value(r, seed, name))
    assert all(row["random_prune"] is None for row in data["metric_vs_sparsity"] if row["run"].startswith("LTH"))
    text = (out / "comparison.md").read_text()
    assert "| value (%) | random_prune (%) | random_reinit (%) |" in text

    # A run stopped before its summary recorded the control: its metrics.json on disk is read instead.
    lth = tmp_path / "lth"
    shutil.copytree(seed_runs["LTH"][0], lth)
    evaluation = read_json(lth / "summary.json")["rounds"][2]["eval"]
    metrics_file = RunDir(lth).round(2).control("random_reinit").metrics
    metrics_file.parent.mkdir(parents=True)
    metrics_file.write_text(json.dumps({**evaluation, "value": 0.25}))
    rounds = read_run(lth).rounds
    assert rounds[2].controls == {"random_reinit": 0.25}
    assert all(not rec.controls for rec in rounds if rec.round != 2)


def test_runs_differing_beyond_the_seed_are_separate_series_and_warned(seed_runs, tmp_path):
    rewound = []
    for run in seed_runs["COLT-2"]:
        rewound.append(tmp_path / f"rewind_{run.name}")
        shutil.copytree(run, rewound[-1])
        config = yaml.safe_load((rewound[-1] / "config.yaml").read_text())
        config["prune"]["rewind_iteration"] = 5
        (rewound[-1] / "config.yaml").write_text(yaml.safe_dump(config))
    records = read_runs([*seed_runs["COLT-2"], *rewound, *seed_runs["LTH"]])
    series = group_series(records)
    assert [s.label for s in series] == [series_label("COLT-2"), series_label("COLT-2") + " #2",
                                         series_label("LTH")]
    assert [[r.path for r in s.runs] for s in series] == [seed_runs["COLT-2"], rewound, seed_runs["LTH"]]
    assert config_differences(records) == ["prune.rewind_iteration"]
    files = write_comparison(records, tmp_path / "out")
    text = files["markdown"].read_text()
    assert "**Warning:** the configs differ" in text and "prune.rewind_iteration" in text.split("## Runs")[0]
    rows = json.loads(files["json"].read_text())["series_rounds_to_sparsity"]
    assert len({row["series"] for row in rows}) == 3

    # A single run keeps its own label; its seed set differs from a series' and is warned about.
    records = read_runs([*seed_runs["COLT-2"], seed_runs["LTH"][1]])
    assert [s.label for s in group_series(records)] == [series_label("COLT-2"), "LTH"]
    assert config_differences(records) == ["seed"]


def test_a_comparison_of_single_runs_has_no_series_outputs(compared):
    out, _ = compared
    data = json.loads((out / "comparison.json").read_text())
    assert set(data) == {"runs", "config_differences", "rounds_to_sparsity", "metric_vs_sparsity", "wall_time",
                         "search", "similarity"}
    assert not list(out.glob("series_*"))
    text = (out / "comparison.md").read_text()
    assert "Series" not in text and "±" not in text and "random_prune" not in text
    assert list(read_csv(out / "metric_vs_sparsity.csv")[0]) == ["run", "round", "sparsity", "prune_rate",
                                                                 "metric", "value"]


# ----- the per-class section: asked for by the task's report style, found through the registry -----------------
def per_class_task(name: str, per_class: bool) -> TaskEntry:
    """A throwaway task whose report style asks for the comparison's per-class section or not."""
    style = ReportStyle(title="toy run", per_class_title="Per-class score (%)", per_class_name="score",
                        per_class_metric="score", mean_row="mean", compare_per_class=per_class)

    def unused(*args):
        raise AssertionError("a comparison builds no task")

    return TaskEntry(name=name, config=dict, build=unused, report_style=lambda config: style, export_target=unused)


@pytest.fixture
def per_class_tasks():
    names = {"toy_per_class": True, "toy_plain": False, "toy": True}  # "toy": what the toy ticket's architecture says
    for name, per_class in names.items():
        register_task(per_class_task(name, per_class))
    yield
    for name in names:
        unregister_task(name)


def as_task(run: Path, out: Path, task: str | None, metric: str = "accuracy") -> Path:
    """A copy of a run whose config names `task` (None: no task key, as in an older run) and whose evaluations
    have per-class values, under the metric name `metric`."""
    shutil.copytree(run, out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config.pop("task", None)
    if task is not None:
        config["task"] = task
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    summary = read_json(out / "summary.json")
    for rec in summary["rounds"]:
        if rec.get("eval"):
            rec["eval"]["metric"] = metric
            rec["eval"]["per_class"] = {f"c{k}": (k + rec["round"]) / 10 for k in range(NUM_CLASSES)}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_the_per_class_section_is_written_for_runs_whose_task_style_asks_for_it(runs, per_class_tasks, tmp_path):
    asking = [as_task(run, tmp_path / f"asking_{run.name}", "toy_per_class") for run in runs]
    out = tmp_path / "asking_out"
    result = CliRunner().invoke(compare_command, [*map(str, asking), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "comparison.md").read_text()
    assert "## Per-class score (%) at matching sparsity" in text and "![per-class score](per_class_score.png)" in text
    assert "| **mean** |" in text
    assert (out / "per_class_score.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (out / "per_class_score.csv").read_text().splitlines()[1].startswith("c0,")
    assert f"{out / 'per_class_score.csv'}" in result.output

    # One run whose style asks for it is enough; an older run's ticket architecture names its task.
    plain = as_task(runs[0], tmp_path / "plain_colt", "toy_plain")
    older = as_task(runs[1], tmp_path / "older_lth", None)
    files = write_comparison(read_runs([plain, older]), tmp_path / "mixed_out")
    assert "per_class_png" in files and "## Per-class score (%)" in files["markdown"].read_text()


def test_no_per_class_section_for_runs_whose_task_style_does_not_ask_for_it(runs, per_class_tasks, tmp_path):
    # The metric's name decides nothing: "mAP" in it makes no run a detection run.
    plain = [as_task(run, tmp_path / f"plain_{run.name}", "toy_plain", metric="voc07 mAP") for run in runs]
    files = write_comparison(read_runs(plain), tmp_path / "plain_out")
    assert "per_class_png" not in files and not list((tmp_path / "plain_out").glob("per_class_*"))
    assert "Per-class" not in files["markdown"].read_text()
    # An unregistered task has no task-specific style: the task-agnostic tables are written all the same.
    unknown = [as_task(run, tmp_path / f"unknown_{run.name}", "no_such_task") for run in runs]
    files = write_comparison(read_runs(unknown), tmp_path / "unknown_out")
    assert "per_class_png" not in files and "## Runs" in files["markdown"].read_text()
