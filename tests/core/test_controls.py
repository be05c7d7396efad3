"""Controls of a ticket (random_prune, random_reinit) and the one late-rewinding point of a run."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from toy import ToyTask, run_toy

from colt_core.config import ConfigError, from_dict, to_dict
from colt_core.export import load_round_ticket
from colt_core.io import read_json
from colt_core.prune.controls import make_control, random_prune_mask
from colt_core.prune.weights import snapshot
from colt_core.rundir import RunDir, prepare_run_dir, read_summary
from colt_core.settings import PruneConfig, SplitConfig

TOY_RUN = Path(__file__).with_name("toy_run.py")
pytestmark = pytest.mark.usefixtures("one_thread")


def run_loop(out: Path, prune: PruneConfig, task: ToyTask | None = None, seed: int = 3):
    config = {"seed": seed, "prune": to_dict(prune), "split": to_dict(SplitConfig())}
    return run_toy(prepare_run_dir(out, config, resume=False, overwrite=False), prune, seed=seed, task=task)


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


# ----- the masks and starts ------------------------------------------------------------------------------
def test_random_prune_keeps_every_layers_count_and_draws_an_independent_pattern():
    gen = torch.Generator().manual_seed(0)
    ticket = {"a": torch.rand(200, 100, generator=gen) < 0.3, "b": torch.rand(50, generator=gen) < 0.9,
              "c": torch.zeros(7, dtype=torch.bool)}
    control = random_prune_mask(ticket, seed=5)
    assert list(control) == list(ticket)
    for name, m in ticket.items():
        assert control[name].shape == m.shape and control[name].dtype == torch.bool
        assert int(control[name].sum()) == int(m.sum())  # exactly the ticket's count, layer by layer
    n, k = ticket["a"].numel(), int(ticket["a"].sum())
    overlap = int((control["a"] & ticket["a"]).sum())
    # Two independent draws of k of n positions share k²/n on average (hypergeometric, sd < sqrt(k²/n)).
    expected = k * k / n
    assert abs(overlap - expected) < 5 * math.sqrt(expected)
    assert not torch.equal(control["a"], ticket["a"])
    assert all(torch.equal(control[k_], random_prune_mask(ticket, seed=5)[k_]) for k_ in ticket)  # seeded
    assert not torch.equal(random_prune_mask(ticket, seed=6)["a"], control["a"])


def test_random_reinit_keeps_the_mask_and_starts_from_a_fresh_draw_in_every_pruned_tensor():
    task = ToyTask()
    torch.manual_seed(0)
    theta0 = snapshot(task.build_model(6))
    mask = {"conv.weight": torch.rand(theta0["conv.weight"].shape) < 0.5,
            "fc1.weight": torch.rand(theta0["fc1.weight"].shape) < 0.5}

    def draw():
        torch.manual_seed(1)
        return snapshot(task.build_model(6))

    control = make_control("random_reinit", mask, theta0, seed=0, draw_init=draw)
    assert control.mask is mask
    for name in mask:  # every pruned-into tensor starts elsewhere, and from the same init scheme
        assert not torch.equal(control.start[name], theta0[name])
        assert control.start[name].abs().max() <= theta0[name].abs().max() * 1.5
    pruned = make_control("random_prune", mask, theta0, seed=0, draw_init=draw)
    assert pruned.start is theta0 and all(int(pruned.mask[k].sum()) == int(mask[k].sum()) for k in mask)
    with pytest.raises(ValueError, match="unknown control 'shuffle'"):
        make_control("shuffle", mask, theta0, seed=0, draw_init=draw)


def test_unknown_or_repeated_controls_are_refused_on_load():
    with pytest.raises(ConfigError, match=r"controls: must be distinct names from random_prune, random_reinit"):
        from_dict(PruneConfig, {"controls": ["random_prune", "shuffle"]})
    with pytest.raises(ConfigError, match=r"controls: must be distinct"):
        from_dict(PruneConfig, {"controls": ["random_prune", "random_prune"]})


# ----- controls in a run -----------------------------------------------------------------------------------
class RecordingToyTask(ToyTask):
    """The toy task, noting the weights each training starts from (at its first training batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        self._tag: str | None = None

    def datasets(self, class_ids, job=None):
        self._tag = job.tag if job is not None else None
        return super().datasets(class_ids, job)

    def loss(self, model, batch):
        if model.training and self._tag is not None and self._tag not in self.starts:
            self.starts[self._tag] = snapshot(model)
        return super().loss(model, batch)


CONTROLS = PruneConfig(partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.6, max_rounds=3,
                       evaluate="all", controls=["random_prune", "random_reinit"])


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    task = RecordingToyTask()
    out = tmp_path_factory.mktemp("controls") / "run"
    return out, run_loop(out, CONTROLS, task), task


def test_every_evaluated_sparse_ticket_gets_both_controls_trained_like_it(controlled):
    out, _, task = controlled
    run = RunDir(out)
    summary = read_summary(run)
    assert summary.rounds[0].controls == {}  # the dense model is no ticket
    sparse = [rec for rec in summary.rounds if rec.sparsity > 0]
    assert len(sparse) >= 2
    init = load(run.init)
    for rec in sparse:
        r, mask = rec.round, load(run.round(rec.round).mask)
        assert set(rec.controls) == {"random_prune", "random_reinit"}
        for name, evaluation in rec.controls.items():
            files = run.round(r).control(name)
            assert evaluation.to_dict() == read_json(files.metrics)
            assert evaluation.metric == "accuracy" and 0 < evaluation.value <= 1
            assert evaluation.training is not None and len(evaluation.training.history) == 3
            assert files.model.is_file() and not files.checkpoint.exists()
        # random_prune: the ticket's per-layer counts, another pattern, from θ0 like the ticket
        random_mask = load(run.round(r).control("random_prune").mask)
        assert all(int(random_mask[k].sum()) == int(mask[k].sum()) for k in mask)
        assert any(not torch.equal(random_mask[k], mask[k]) for k in mask)
        start = task.starts[f"round_{r:02d}/random_prune"]
        ticket_start = task.starts[f"round_{r:02d}/full"]
        for k in mask:
            assert torch.equal(start[k], init[k] * random_mask[k])
        assert torch.equal(start["head.weight"], ticket_start["head.weight"])  # the ticket's own fresh head
        # random_reinit: the ticket's mask on another draw; trained, it stays under that mask
        reinit = task.starts[f"round_{r:02d}/random_reinit"]
        for k in mask:
            assert torch.equal(reinit[k] != 0, mask[k])  # zero where pruned, a fresh value everywhere else
            assert not torch.equal(reinit[k], ticket_start[k])
        trained = load(run.round(r).control("random_reinit").model)
        assert all(torch.count_nonzero(trained[k][~mask[k]]) == 0 for k in mask)
        trained = load(run.round(r).control("random_prune").model)
        assert all(torch.count_nonzero(trained[k][~random_mask[k]]) == 0 for k in mask)


def test_controls_are_reproducible_and_leave_the_ticket_as_without_them(controlled, tmp_path):
    out, result, _ = controlled
    again = run_loop(tmp_path / "again", CONTROLS)
    plain = run_loop(tmp_path / "plain", PruneConfig(**{**to_dict(CONTROLS), "controls": []}))
    for r in range(len(result.rounds)):
        for name in ("random_prune", "random_reinit"):
            path = RunDir(out).round(r).control(name).model
            if path.is_file():
                a, b = load(path), load(RunDir(tmp_path / "again").round(r).control(name).model)
                assert all(torch.equal(a[k], b[k]) for k in a)
    for part in ("mask", "init"):
        assert all(torch.equal(result.ticket.to_dict()[part][k], plain.ticket.to_dict()[part][k])
                   for k in result.ticket.mask)
    assert [r.evaluation.value for r in result.rounds] == [r.evaluation.value for r in plain.rounds]
    assert again.rounds[-1].controls["random_prune"].value == result.rounds[-1].controls["random_prune"].value


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TOY_RUN), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_control_killed_in_training_resumes_to_the_same_result(tmp_path):
    args = ("--controls", "random_prune,random_reinit")
    reference = _start(tmp_path / "ref", *args)
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()
    proc = _start(tmp_path / "killed", *args, "--sleep", "0.1")
    kill_after = tmp_path / "killed" / "round_01" / "controls" / "random_reinit" / "train_state.pt"
    deadline = time.time() + 240
    while not kill_after.exists():
        assert proc.poll() is None, "run ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _start(tmp_path / "killed", *args, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    for r in RunDir(tmp_path / "ref").rounds():
        for name in ("random_prune", "random_reinit"):
            a_dir = RunDir(tmp_path / "ref").round(r).control(name)
            b_dir = RunDir(tmp_path / "killed").round(r).control(name)
            assert a_dir.model.is_file() == b_dir.model.is_file()
            if a_dir.model.is_file():
                a, b = load(a_dir.model), load(b_dir.model)
                assert all(torch.equal(a[k], b[k]) for k in a), f"round {r} {name}"
                assert read_json(a_dir.metrics)["value"] == read_json(b_dir.metrics)["value"]


# ----- one rewind point ---------------------------------------------------------------------------------
REWIND = 4


@pytest.mark.parametrize("method", ["colt", "lth"])
def test_late_rewinding_has_one_point_for_partitions_evaluations_controls_and_the_ticket(tmp_path, method):
    prune = PruneConfig(method=method, partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.6,
                        max_rounds=3, evaluate="all", rewind_iteration=REWIND, controls=["random_prune"])
    task = RecordingToyTask()
    run_loop(tmp_path / "run", prune, task)
    run = RunDir(tmp_path / "run")
    source = run.round(0).eval if method == "colt" else run.round(0).partition(0)
    point = load(source.rewind)
    init = load(run.init)
    assert any(not torch.equal(point[k], init[k]) for k in point if k.endswith("weight"))  # k steps trained
    ticket = load(run.ticket)
    assert all(torch.equal(ticket["init"][k], point[k]) for k in point)  # the weights the mask applies to
    assert ticket["meta"]["start"] == {"weights": "late_rewind", "iteration": REWIND,
                                       "source": run.relative(source.path)}
    pruned = list(load(run.round(0).mask))
    source_tag = "round_00/full" if method == "colt" else "round_00/p0"
    assert source_tag in task.starts and any(t.startswith("round_01/") for t in task.starts)
    for tag, starts in task.starts.items():
        r, part = int(tag[6:8]), tag.split("/")[1]
        mask = load(run.round(r).control(part).mask) if part == "random_prune" else load(run.round(r).mask)
        expected = init if tag == source_tag else point  # the training the point comes from starts at θ0
        # COLT's partitions have heads of their group's size; its dense model a fresh all-class one.
        own_head = method == "colt" and (part.startswith("p") or tag == source_tag)
        for k, value in starts.items():
            if own_head and k.startswith("head."):
                continue
            want = expected[k] * mask[k] if k in pruned else expected[k]
            assert torch.equal(value, want), f"{tag}: {k} does not start from the rewind point"
    evaluated = [t for t in task.starts if t.endswith("/full") and t != source_tag]
    assert evaluated  # a sparse ticket's evaluation started from the point, its head included
    exported = load_round_ticket(run, 1)  # an export of a round's ticket takes the same start weights
    assert all(torch.equal(exported.init[k], point[k]) for k in point)
    assert all(torch.equal(load_round_ticket(run, 0).init[k], init[k]) for k in init)  # the dense model's: θ0


def test_without_late_rewinding_the_ticket_says_it_starts_from_theta0(controlled):
    out = controlled[0]
    ticket = load(out / "ticket.pt")
    assert ticket["meta"]["start"] == {"weights": "theta0"}
    assert all(torch.equal(ticket["init"][k], v) for k, v in load(out / "init.pt").items())
