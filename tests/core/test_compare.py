"""Comparing a COLT and an LTH run: tables agree with the runs' own files; plots written; configs checked."""

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from toy import NUM_CLASSES, ToyNet, run_toy

from colt_core.compare import (
    ComparedRound,
    ComparedRun,
    CompareError,
    config_differences,
    matching_tickets,
    read_run,
    read_runs,
    rounds_to_sparsity,
    rounds_to_sparsity_markdown,
    sparsity_levels,
    write_comparison,
)
from colt_core.config import to_dict
from colt_core.io import read_json
from colt_core.rundir import prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(out: Path, method: str, max_rounds: int) -> Path:
    prune = PruneConfig(method=method, partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.75,
                        max_rounds=max_rounds, evaluate="all")
    split = SplitConfig()
    config = {"seed": 3, "prune": to_dict(prune), "split": to_dict(split)}
    run_dir = prepare_run_dir(out, config, resume=False, overwrite=False)
    run_toy(run_dir, prune, split, seed=3, epochs=2)
    return run_dir.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return make_run(root / "colt", "colt", 3), make_run(root / "lth", "lth", 4)


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("compare")
    spec = importlib.util.spec_from_file_location("compare_runs_tool", REPO / "tools" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = CliRunner().invoke(module.main, [str(runs[0]), str(runs[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


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
