"""The control inside a search, as the demo runs it: `prune.controls: [random_prune]` with the dense model and
the final ticket evaluated, trained after the final ticket, resumable, and compared with it in words and numbers
on the terminal and in report.md."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from toy import ToyTask, run_toy

from colt_core.commands import main as colt
from colt_core.config import to_dict
from colt_core.io import read_json
from colt_core.registry import unregister_task
from colt_core.report.rounds_table import verdict_lines
from colt_core.rundir import Evaluation, RoundRecord, RunDir, RunSummary, prepare_run_dir, read_summary
from colt_core.settings import PruneConfig, SplitConfig

TOY_RUN = Path(__file__).with_name("toy_run.py")
pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = PruneConfig(partitions=2, rates={"conv": 0.3, "fc": 0.4}, target_sparsity=0.5, max_rounds=3,
                   evaluate="first_last", controls=["random_prune"])


class IntervalToyTask(ToyTask):
    """The toy task with an interval around every evaluation's value, as a bootstrap would give one."""

    def evaluate(self, model, job) -> dict:
        metrics = super().evaluate(model, job)
        return {**metrics, "interval": [metrics["value"] - 0.05, min(1.0, metrics["value"] + 0.03)]}


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    config = {"seed": 3, "prune": to_dict(DEMO), "split": to_dict(SplitConfig())}
    result = run_toy(prepare_run_dir(out, config, resume=False, overwrite=False), DEMO, seed=3,
                     task=IntervalToyTask())
    return out, result


def test_the_final_ticket_alone_gets_its_random_prune_control_with_the_tickets_per_layer_counts(demo):
    out, result = demo
    run, summary = RunDir(out), read_summary(RunDir(out))
    final = summary.rounds[-1]
    assert final.sparsity >= 0.5 and final.evaluation is not None
    assert [r.round for r in summary.rounds if r.controls] == [final.round]  # after the final ticket only
    control = final.controls["random_prune"]
    files = run.round(final.round).control("random_prune")
    assert control.to_dict() == read_json(files.metrics)  # summary.json and the control's metrics.json agree
    assert control.training is not None and files.model.is_file() and not files.checkpoint.exists()
    ticket_mask, random_mask = result.ticket.mask, load(files.mask)
    assert set(random_mask) == set(ticket_mask)
    for name, keep in ticket_mask.items():
        assert int(random_mask[name].sum()) == int(keep.sum()), name  # exactly the ticket's count, layer by layer
    assert any(not torch.equal(random_mask[k], ticket_mask[k]) for k in ticket_mask)
    trained = load(files.model)
    assert all(torch.count_nonzero(trained[k][~random_mask[k]]) == 0 for k in random_mask)


def test_the_verdict_states_the_ticket_against_the_dense_model_and_the_control_with_their_numbers(demo):
    out, _ = demo
    summary = read_summary(RunDir(out))
    dense, final = summary.rounds[0].evaluation, summary.rounds[-1]
    ticket, control = final.evaluation, final.controls["random_prune"]
    lines = verdict_lines(summary)
    assert len(lines) == 3

    def score(e: Evaluation) -> str:
        lo, hi = e.get("interval")
        return f"{e.value:.3f} (interval {lo:.3f}–{hi:.3f})"

    def points(other: float) -> str:
        diff = round(100 * (ticket.value - other), 1)
        if diff == 0:
            return "level with it (±0.0 points)"
        word, sign = ("above", "+") if diff > 0 else ("below", "−")
        return f"{abs(diff):.1f} points {word} it ({sign}{abs(diff):.1f})"

    assert lines[0] == (f"Ticket of round {final.round} ({100 * final.sparsity:.1f}% of the prunable weights pruned): "
                        f"accuracy {score(ticket)}")
    assert lines[1] == f"  vs the dense model {score(dense)}: {points(dense.value)}"
    assert lines[2] == f"  vs its random_prune control {score(control)}: {points(control.value)}"


def test_verdict_words_follow_the_sign_and_need_something_to_compare_with():
    def record(r: int, sparsity: float, value: float | None, **controls: float) -> RoundRecord:
        evaluation = None if value is None else Evaluation("mAP", value)
        return RoundRecord(round=r, sparsity=sparsity, prune_rate=sparsity / 2, evaluation=evaluation,
                           controls={k: Evaluation("mAP", v) for k, v in controls.items()})

    summary = RunSummary("colt", 2, rounds=[record(0, 0.0, 0.718), record(1, 0.565, 0.706, random_prune=0.655)])
    assert verdict_lines(summary) == [
        "Ticket of round 1 (56.5% of the prunable weights pruned): mAP 0.706",
        "  vs the dense model 0.718: 1.2 points below it (−1.2)",
        "  vs its random_prune control 0.655: 5.1 points above it (+5.1)"]
    level = RunSummary("colt", 2, rounds=[record(0, 0.0, 0.5), record(1, 0.6, 0.5)])
    assert verdict_lines(level)[1] == "  vs the dense model 0.500: level with it (±0.0 points)"
    assert verdict_lines(RunSummary("colt", 2, rounds=[record(0, 0.0, 0.7), record(1, 0.6, None)])) == []
    assert verdict_lines(RunSummary("colt", 2, rounds=[record(0, 0.0, None), record(1, 0.6, 0.7)])) == []


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TOY_RUN), "--out", str(out), "--controls", "random_prune",
                             "--evaluate", "first_last", "--target", "0.5", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_run_killed_in_its_control_training_resumes_to_the_same_result(tmp_path):
    reference = _start(tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()
    ref = RunDir(tmp_path / "ref")
    final = read_summary(ref).rounds[-1].round
    proc = _start(tmp_path / "killed", "--sleep", "0.1")
    kill_after = tmp_path / "killed" / f"round_{final:02d}" / "controls" / "random_prune" / "train_state.pt"
    deadline = time.time() + 240
    while not kill_after.exists():
        assert proc.poll() is None, "run ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = RunDir(tmp_path / "killed")
    assert not killed.round(final).control("random_prune").metrics.exists()  # killed part-way through it
    resumed = _start(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    a_dir, b_dir = ref.round(final).control("random_prune"), killed.round(final).control("random_prune")
    a, b = load(a_dir.model), load(b_dir.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(load(a_dir.mask)["fc1.weight"], load(b_dir.mask)["fc1.weight"])
    assert read_json(a_dir.metrics)["value"] == read_json(b_dir.metrics)["value"]
    assert read_summary(ref).rounds[-1].controls["random_prune"].value == \
        read_summary(killed).rounds[-1].controls["random_prune"].value


@pytest.fixture
def blobs():
    import blobs_task

    yield blobs_task.ENTRY
    unregister_task(blobs_task.ENTRY.name)
    sys.modules.pop("blobs_task", None)


def test_colt_train_ends_with_the_verdict_and_report_md_shows_it(blobs, tmp_path):
    config = {"task": "blobs", "seed": 3,
              "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01},
                        "schedule": {"name": "constant"}, "progress": False},
              "eval": {"batch_size": 64},
              "prune": {"method": "colt", "partitions": 2, "rates": {"conv": 0.3, "fc": 0.3}, "target_sparsity": 0.5,
                        "max_rounds": 2, "controls": ["random_prune"]}}
    cfg = tmp_path / "blobs.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(colt, ["train", "--cfg", str(cfg), "--out", str(tmp_path / "run")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    summary = read_summary(run)
    expected = verdict_lines(summary)
    assert len(expected) == 3 and "random_prune control" in expected[2]
    assert result.output.rstrip("\n").splitlines()[-3:] == expected  # the run's last lines
    report = run.report.read_text()
    assert "## Ticket against the dense model and its controls" in report
    assert all(f"- {line.strip()}" in report for line in expected)
    assert "random_prune control (%)" in report  # the rounds table's control column
