"""End to end: a two-round COLT detection run through the tool, its report, and eval_det on its output."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import eval_det  # noqa: E402
import train_colt_det  # noqa: E402

from colt_core.prune.ticket import load_ticket  # noqa: E402
from colt_det.voc import VOC_CLASSES  # noqa: E402

TINY = [
    "data.synthetic.n_trainval=24", "data.synthetic.n_test=8", "data.synthetic.image_size=64",
    "data.val_fraction=0.25", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
    "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4", "train.progress=false",
    "eval.coco=true", "prune.max_rounds=2", "prune.target_sparsity=0.95", "prune.evaluate=all",
]


def run_tool(tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp_path / 'voc'}"]
    for item in TINY + list(extra):
        args += ["--set", item]
    result = CliRunner().invoke(train_colt_det.main, [*args, "--out", str(tmp_path / "run")])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def colt_run(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("detrun")
    code, output = run_tool(tmp)
    assert code == 0, output
    return tmp, output


def test_two_round_colt_run_writes_the_run_directory(colt_run):
    tmp, _ = colt_run
    run = tmp / "run"
    split = json.loads((run / "split.json").read_text())
    assert len(split["groups"]) == 2 and sorted(c for g in split["groups"] for c in g) == list(range(20))
    assert split["class_names"] == list(VOC_CLASSES)
    for r in range(2):
        for p in range(2):
            part = run / f"round_{r:02d}" / f"partition_{p}"
            state = torch.load(part / "model.pt", weights_only=True)
            assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == len(split["groups"][p]) + 1
            data = json.loads((part / "data.json").read_text())
            assert data["train"]["images"] > 0 and data["train"]["objects"] >= data["train"]["images"]
            assert set(data["train"]["per_class"]) <= {VOC_CLASSES[c] for c in split["groups"][p]}
    masks = [torch.load(run / f"round_{r:02d}" / "mask.pt", weights_only=True) for r in range(3)]
    assert all(m.all() for m in masks[0].values())
    for a, b in itertools.pairwise(masks):
        assert all(not (b[k] & ~a[k]).any() for k in a)
        assert sum(int(v.sum()) for v in b.values()) < sum(int(v.sum()) for v in a.values())
    ticket = load_ticket(run / "ticket.pt")
    assert ticket.architecture["name"] == "fasterrcnn_vgg16"
    assert not any(k.startswith("roi_heads.box_predictor") for k in ticket.mask)
    assert any(k.startswith("rpn.head") for k in ticket.mask) and "roi_heads.box_head.fc6.weight" in ticket.mask


def test_report_tables_and_per_class_files(colt_run):
    tmp, output = colt_run
    run = tmp / "run"
    report = (run / "report.md").read_text()
    assert "| round | sparsity" in report and "voc07 mAP" in report
    rounds_section = report.split("## Rounds", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in rounds_section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3 and all(line.split("|")[4].strip() for line in rows)  # rounds 0, 1, 2 evaluated
    search = report.split("## Search", 1)[1].split("\n## ", 1)[0]
    assert [line.split("|")[1].strip() for line in search.splitlines() if line.startswith("| ") and line[2].isdigit()
            ] == ["0", "1"]  # rounds 0 and 1 trained the partitions that found rounds 1's and 2's masks
    for name in VOC_CLASSES:
        assert f"| {name} |" in report and f"| {name} |" in output
    per_class = json.loads((run / "per_class_ap.json").read_text())
    assert len(per_class) == 3 and all(set(v["per_class"]) == set(VOC_CLASSES) for v in per_class.values())
    csv_lines = (run / "per_class_ap.csv").read_text().splitlines()
    assert len(csv_lines) == 21 and csv_lines[0].startswith("class,dense")
    assert (run / "per_class_ap.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((run / "round_02" / "eval" / "metrics.json").read_text())
    assert {"voc07", "voc12", "coco"} <= set(metrics) and 0.0 <= metrics["value"] <= 1.0
    # The headline mAP's bootstrap interval over the test images, in metrics.json, summary.json and the tables.
    assert metrics["interval"] == metrics["voc07"]["interval"] and len(metrics["interval"]) == 2
    assert metrics["interval_method"] == "bootstrap, 1000 resamples of test images, 95% percentile"
    assert metrics["voc12"]["interval"][0] <= metrics["voc12"]["interval"][1] and "AP50_interval" in metrics["coco"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"][2]["eval"]["interval"] == metrics["interval"]
    assert all(" [" in line.split("|")[4] for line in rows) and "In brackets" in report and "In brackets" in output
    assert len(list((run / "round_02" / "eval" / "results").glob("comp4_det_test_*.txt"))) == 20
    assert any((run / "tb").rglob("events.out.tfevents.*"))


def test_eval_det_reproduces_the_run_from_results_files_and_from_the_checkpoint(colt_run, tmp_path):
    tmp, _ = colt_run
    run = tmp / "run"
    stored = json.loads((run / "round_02" / "eval" / "metrics.json").read_text())["voc07"]
    runner = CliRunner()
    out = tmp_path / "ap.json"
    args = ["--voc-root", str(tmp / "voc"), "--year", "2007", "--image-set", "test", "--metric", "voc07"]
    result = runner.invoke(eval_det.main, [*args, "--results", str(run / "round_02" / "eval" / "results"),
                                           "--out", str(out)])
    assert result.exit_code == 0, result.output
    from_files = json.loads(out.read_text())
    assert from_files["metric"] == "voc07" and from_files["mAP"] == pytest.approx(stored["mAP"], abs=1e-9)
    result = runner.invoke(eval_det.main, [*args, "--checkpoint", str(run / "round_02" / "eval" / "model.pt"),
                                           "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["mAP"] == pytest.approx(stored["mAP"], abs=1e-6)


def test_rerun_is_refused_and_resume_redoes_nothing(colt_run):
    tmp, _ = colt_run
    run = tmp / "run"
    trained = sorted(run.glob("round_*/*/model.pt"))
    before = {p: p.stat().st_mtime_ns for p in trained}
    code, output = run_tool(tmp)
    assert code != 0 and "--resume" in output
    args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp / 'voc'}"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(train_colt_det.main, [*args, "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "| **mAP** |" in result.output
    assert {p: p.stat().st_mtime_ns for p in trained} == before  # nothing was trained again
    changed = CliRunner().invoke(train_colt_det.main, [*args, "--set", "train.epochs=2", "--out", str(run), "--resume"])
    assert changed.exit_code != 0 and "train.epochs" in changed.output


@pytest.mark.parametrize("override, message", [
    ("prune.partitions=21", "prune.partitions"),
    ("train.epochs=0", "train.epochs"),
    ("model.roi_pool=max", "model.roi_pool"),
    ("data.synthetic.n_tests=3", "data.synthetic.n_tests"),
])
def test_config_errors_are_one_line(tmp_path, override, message):
    result = CliRunner().invoke(train_colt_det.main, ["--cfg", "voc_synth_tiny.yaml", "--set", override,
                                                      "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_missing_dataset_names_the_path(tmp_path):
    result = CliRunner().invoke(train_colt_det.main, ["--cfg", "voc_vgg16.yaml", "--set",
                                                      f"data.root={tmp_path / 'nowhere'}", "--out",
                                                      str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "nowhere" in result.output and "make_synthetic_voc" in result.output


def test_tool_help_runs_as_a_script():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "train_colt_det.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--resume" in out and "--overwrite" in out


def test_a_control_of_the_runs_ticket_trains_on_its_own(colt_run, tmp_path):
    tmp, _ = colt_run
    ticket = load_ticket(tmp / "run" / "ticket.pt")
    args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp / 'voc'}"]
    for item in TINY:
        args += ["--set", item]
    out = tmp_path / "random_prune"
    result = CliRunner().invoke(train_colt_det.main, [*args, "--ticket", str(tmp / "run" / "ticket.pt"),
                                                      "--control", "random_prune", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ticket"]["control"] == "random_prune" and metrics["metric"] == "voc07 mAP"
    mask = torch.load(out / "mask.pt", weights_only=True)
    assert all(int(mask[k].sum()) == int(m.sum()) for k, m in ticket.mask.items())  # the ticket's counts
    assert any(not torch.equal(mask[k], m) for k, m in ticket.mask.items())
    model = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.count_nonzero(model[k][~m]) == 0 for k, m in mask.items())
    report = (out / "report.md").read_text()
    assert "a given random_prune control" in report and "| aeroplane |" in report
    assert "| random_prune |" in result.output
    lone = CliRunner().invoke(train_colt_det.main, [*args, "--control", "random_reinit", "--out", str(tmp_path / "x")])
    assert lone.exit_code == 1
    assert "Error: control: is a control of a given ticket: pass --ticket FILE too" in lone.output
