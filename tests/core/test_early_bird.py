"""Early-bird search trainings: the stop rule against distances computed by hand, the weights a stopped training
hands the round, what it records, and a kill in the middle of one resumed to the same ticket."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from toy import ToyNet, ToyTask, run_toy, toy_train_config

from colt_core.config import to_dict
from colt_core.prune.magnitude import PruneGroup, magnitude_prune
from colt_core.prune.ticket import load_ticket
from colt_core.report import ReportStyle, read_runs, search_markdown, search_rows, write_report
from colt_core.rundir import RunDir, TrainingDir, prepare_run_dir, read_summary
from colt_core.settings import EarlyBirdConfig, PruneConfig
from colt_core.train.early_bird import EarlyBird
from colt_core.train.task import TrainJob
from colt_core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
HERE = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 12  # 192 training samples of the 6 toy classes in batches of 16
STYLE = ReportStyle(title="toy run", per_class_title="Per-class accuracy (%)", per_class_name="accuracy")
GROUPS = [PruneGroup("conv", 0.3, ("conv.weight",)), PruneGroup("fc", 0.3, ("fc1.weight",))]


def all_alive(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n in ("conv.weight",
                                                                                                 "fc1.weight")}


class RecordingPrune:
    """The round's pruning function, keeping every would-be mask it made and the weights it saw."""

    def __init__(self, mask: dict[str, torch.Tensor]) -> None:
        self.mask, self.masks, self.weights = mask, [], []

    def __call__(self, weights):
        self.weights.append({n: w.clone() for n, w in weights.items()})
        self.masks.append(magnitude_prune(weights, self.mask, GROUPS))
        return self.masks[-1]


def train_early_bird(tmp_path: Path, settings: EarlyBirdConfig, epochs: int = 12):
    torch.manual_seed(0)
    model = ToyNet(6)
    mask = all_alive(model)
    prune = RecordingPrune(mask)
    job = TrainJob(round=0, partition=0, class_ids=None, model=model, mask=mask, seed=5,
                   files=TrainingDir(tmp_path / "t"), early_bird=EarlyBird(settings, prune, mask))
    (tmp_path / "t").mkdir()
    out = Trainer(ToyTask(), toy_train_config(epochs), eval_batch_size=64).train(job)
    return out, prune, job.early_bird


def by_hand(masks: list[dict[str, torch.Tensor]], window: int) -> list[float | None]:
    """The window's largest distance at each check: differing weights over all weights alive (all of them)."""
    flat = [torch.cat([m["conv.weight"].flatten(), m["fc1.weight"].flatten()]) for m in masks]
    out: list[float | None] = []
    for t, current in enumerate(flat):
        earlier = flat[max(0, t - window):t]
        out.append(max(int((current ^ e).sum()) / current.numel() for e in earlier) if t >= window else None)
    return out


def test_the_training_stops_at_the_first_check_whose_window_is_within_the_distance(tmp_path):
    settings = EarlyBirdConfig(distance=0.12, window=3, check=4)
    out, prune, early_bird = train_early_bird(tmp_path, settings)
    expected = by_hand(prune.masks, window=3)
    assert [c["distance"] for c in early_bird.trace] == pytest.approx(expected)
    first = next(t for t, d in enumerate(expected) if d is not None and d < 0.12)
    assert len(prune.masks) == first + 1  # no check after the stop
    assert all(d is None or d >= 0.12 for d in expected[:first])
    step = 4 * (first + 1)
    assert early_bird.stopped == {"step": step, "epoch": (step - 1) // STEPS_PER_EPOCH,
                                  "distance": pytest.approx(expected[first])}
    # The round prunes from the weights of the stop: the selected weights are the ones the last check saw.
    for name, weight in prune.weights[-1].items():
        assert torch.equal(out.state_dict[name], weight), name
    record = out.record.early_bird
    assert record["stopped"] and record["steps_run"] == step and record["epochs_configured"] == 12
    assert record["epochs_run"] == pytest.approx(step / STEPS_PER_EPOCH)
    assert out.record.stopped_early and len(out.record.history) == early_bird.stopped["epoch"] + 1


def test_an_epoch_check_that_never_settles_trains_every_epoch_and_keeps_the_best(tmp_path):
    out, prune, early_bird = train_early_bird(tmp_path, EarlyBirdConfig(distance=1e-9, window=2), epochs=4)
    assert len(prune.masks) == 4 and early_bird.stopped is None
    assert [c["step"] for c in early_bird.trace] == [12, 24, 36, 48]
    assert [c["distance"] is None for c in early_bird.trace] == [True, True, False, False]
    assert not out.record.stopped_early and out.record.early_bird["epochs_run"] == 4
    assert len(out.record.history) == 4


def early_bird_prune(**changes) -> PruneConfig:
    return PruneConfig(method="colt", partitions=2, rates={"conv": 0.3, "fc": 0.3}, target_sparsity=0.5,
                       max_rounds=2, evaluate="final",
                       early_bird=EarlyBirdConfig(distance=0.15, window=2, check=3), **changes)


def test_a_colt_run_with_early_bird_records_the_stops_and_is_reproducible(tmp_path):
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    for run in (a, b):
        run.path.mkdir()
        run_toy(run, early_bird_prune(), epochs=12)
    summary = read_summary(a)
    partitions = [p for r in summary.rounds for p in r.partitions or []]
    assert partitions and all(p.training.early_bird is not None for p in partitions)
    assert any(p.training.stopped_early for p in partitions)
    stopped = [p.training for p in partitions if p.training.stopped_early]
    assert all(t.early_bird["epochs_run"] < 12 for t in stopped)
    ta, tb = load_ticket(a.ticket), load_ticket(b.ticket)
    assert all(torch.equal(ta.mask[k], tb.mask[k]) for k in ta.mask)
    evaluation = summary.rounds[-1].evaluation
    assert evaluation is not None and evaluation.training.early_bird is None  # the ticket's evaluation: no stop


def test_lth_does_not_reuse_an_early_stopped_round_as_its_ticket_evaluation(tmp_path):
    run = RunDir(tmp_path / "lth")
    run.path.mkdir()
    prune = replace(early_bird_prune(), method="lth", evaluate="all")
    run_toy(run, prune, epochs=12)
    checked = 0
    for record in read_summary(run).rounds:
        if record.partitions and record.partitions[0].training.stopped_early and record.evaluation is not None:
            assert record.evaluation.reused is None and record.evaluation.training is not None
            assert len(record.evaluation.training.history) == 12
            checked += 1
    assert checked


def test_the_report_and_the_comparison_show_the_epochs_run_and_the_search_time_with_and_without_the_stop(tmp_path):
    lth, colt = RunDir(tmp_path / "lth"), RunDir(tmp_path / "colt")
    for run, prune in ((lth, replace(early_bird_prune(), method="lth", early_bird=None)), (colt, early_bird_prune())):
        run.path.mkdir()
        run_toy(run, prune, epochs=12)
        write_report(run, read_summary(run), ToyTask().class_names, STYLE)
    summary = read_summary(colt)
    searched = [p for r in summary.rounds for p in r.partitions or []]
    ran, planned = sum(p.epochs()[0] for p in searched), sum(p.epochs()[1] for p in searched)
    assert ran < planned == 12 * len(searched)
    last = summary.rounds[-1].round
    search, without = summary.search_time_before(last), summary.search_time_before(last, without_stop=True)
    assert search == pytest.approx(sum(p.wall_time_s for p in searched)) and without > search
    report = colt.report.read_text()
    assert "## Search" in report and "without the stop" in report
    for record in summary.rounds:
        if record.partitions:
            r_ran, r_planned = record.search_epochs()
            assert f"| {record.round} | {100 * record.sparsity:.2f} | 2 | {r_ran:.1f} / {r_planned:.0f} |" in report
    rows = {row["run"]: row for row in search_rows(read_runs([lth, colt]))}
    assert rows["COLT-2"]["early_bird"] and not rows["LTH"]["early_bird"]
    assert rows["COLT-2"]["epochs_run"] == pytest.approx(ran) and rows["LTH"]["ratio_to_lth"] == 1.0
    lth_search = read_summary(lth).search_time_before(read_summary(lth).rounds[-1].round)
    assert rows["COLT-2"]["ratio_to_lth"] == pytest.approx(search / lth_search)
    assert "| COLT-2 |" in search_markdown(list(rows.values()))


def test_a_kill_inside_an_early_bird_training_resumes_to_the_same_ticket(tmp_path):
    prune = replace(early_bird_prune(), early_bird=EarlyBirdConfig(distance=0.15, window=2, check="epoch"))
    config = {"seed": 3, "prune": to_dict(prune), "split": {}}
    whole = prepare_run_dir(tmp_path / "whole", config, resume=False, overwrite=False)
    run_toy(whole, prune, epochs=12)
    first = read_summary(whole).rounds[0].partitions
    assert all(p.training.stopped_early and p.training.early_bird["stop"]["epoch"] >= 1 for p in first)
    killed = tmp_path / "killed"
    command = [sys.executable, str(HERE / "toy_run.py"), "--out", str(killed), "--epochs", "12", "--early-bird",
               "0.15,2,epoch", "--rates", "0.3,0.3", "--target", "0.5", "--max-rounds", "2", "--evaluate", "final",
               "--sleep", "0.05"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = TrainingDir(killed / "round_00" / "partition_0").checkpoint
    try:
        for _ in range(600):  # kill once partition 0 of round 0 has a checkpoint: in the middle of its training
            if checkpoint.is_file() or process.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        process.kill()
    finally:
        process.wait()
    assert checkpoint.is_file(), "the run finished or failed before it could be killed"
    assert not (killed / "ticket.pt").is_file()
    before_kill = torch.load(checkpoint, weights_only=True)["elapsed_s"]
    subprocess.run([*command[:-2], "--resume"], check=True, capture_output=True)
    # The search time counts the work before the kill: the resumed process alone ran for less than the record says.
    assert read_summary(RunDir(killed)).rounds[0].partitions[0].wall_time_s > before_kill > 0
    a, b = load_ticket(whole.ticket), load_ticket(killed / "ticket.pt")
    assert all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)
    assert all(torch.equal(a.init[k], b.init[k]) for k in a.init)
