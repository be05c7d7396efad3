import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from toy import ToyNet, ToyTask, run_toy

from colt_core.config import to_dict
from colt_core.io import CheckpointError, atomic_save, load_checkpoint, read_json
from colt_core.prune.ticket import TicketError, load_ticket
from colt_core.rundir import RunDirError, prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig

TOY_RUN = Path(__file__).with_name("toy_run.py")


def run_loop(out: Path, prune: PruneConfig, split: SplitConfig | None = None, seed: int = 3):
    split = split or SplitConfig()
    config = {"seed": seed, "prune": to_dict(prune), "split": to_dict(split)}
    run_dir = prepare_run_dir(out, config, resume=False, overwrite=False)
    return run_toy(run_dir, prune, split, seed=seed)


def test_colt_run_directory_layout_and_monotone_masks(tmp_path):
    prune = PruneConfig(partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.6, max_rounds=5)
    result = run_loop(tmp_path / "run", prune)
    run = tmp_path / "run"
    split = read_json(run / "split.json")
    assert sorted(c for g in split["groups"] for c in g) == list(range(6))
    assert split["class_names"] == list(ToyTask.class_names)
    for name in ("config.yaml", "init.pt", "ticket.pt", "summary.json"):
        assert (run / name).is_file()
    n_rounds = len(result.rounds)
    previous = None
    for r in range(n_rounds):
        mask = torch.load(run / f"round_{r:02d}" / "mask.pt", weights_only=True)
        assert all(m.dtype == torch.bool for m in mask.values())
        if previous is not None:
            assert all(not (mask[k] & ~previous[k]).any() for k in mask)  # pruned weights never come back
        previous = mask
        assert (run / f"round_{r:02d}" / "sparsity.json").is_file()
    for r in range(n_rounds - 1):
        for p in range(2):
            state = torch.load(run / f"round_{r:02d}" / f"partition_{p}" / "model.pt", weights_only=True)
            assert state["head.weight"].shape[0] == len(split["groups"][p])
    assert result.rounds[-1].sparsity >= 0.6
    assert result.rounds[-2].sparsity < 0.6
    # evaluate="first_last": the dense model and the final ticket
    assert result.rounds[0].evaluation is not None and result.rounds[-1].evaluation is not None
    assert all(r.evaluation is None for r in result.rounds[1:-1])
    ticket = load_ticket(run / "ticket.pt", ToyNet(6), output_layers=["head"])
    assert ticket.meta["method"] == "colt"
    assert set(ticket.mask) == {"conv.weight", "fc1.weight"}


def test_one_colt_round_intersects_the_partitions_masks(tmp_path):
    from colt_core.prune.magnitude import magnitude_prune, resolve_prune_groups
    from colt_core.prune.masks import intersect_masks

    prune = PruneConfig(partitions=3, rates={"conv": 0.2, "fc": 0.3}, max_rounds=1, evaluate="none")
    run_loop(tmp_path / "run", prune)
    run = tmp_path / "run"
    groups = resolve_prune_groups(ToyNet(6), {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}},
                                  prune.rates, ["head"])
    ones = torch.load(run / "round_00" / "mask.pt", weights_only=True)
    masks = [magnitude_prune(torch.load(run / "round_00" / f"partition_{p}" / "model.pt"), ones, groups)
             for p in range(3)]
    expected = intersect_masks(masks)
    final = torch.load(run / "round_01" / "mask.pt", weights_only=True)
    assert all(torch.equal(final[k], expected[k]) for k in final)
    # the intersection prunes more than any single partition would
    single = sum(int(m.sum()) for m in masks[0].values())
    assert sum(int(m.sum()) for m in final.values()) < single


def test_lth_reuses_the_round_model_as_its_evaluation(tmp_path):
    prune = PruneConfig(method="lth", rates={"conv": 0.2, "fc": 0.2}, max_rounds=2, evaluate="all")
    result = run_loop(tmp_path / "run", prune)
    assert read_json(tmp_path / "run" / "split.json")["groups"] == [list(range(6))]
    assert result.rounds[0].evaluation.reused == "round_00/partition_0"
    assert read_json(tmp_path / "run" / "round_00" / "eval" / "metrics.json")["train"] == {
        "reused": "round_00/partition_0"}
    assert (tmp_path / "run" / "round_02" / "eval" / "model.pt").is_file()


def test_same_seed_same_ticket_and_other_seed_other_ticket(tmp_path):
    prune = PruneConfig(partitions=2, rates={"conv": 0.2, "fc": 0.3}, max_rounds=2, evaluate="none")
    a = run_loop(tmp_path / "a", prune).ticket
    b = run_loop(tmp_path / "b", prune).ticket
    c = run_loop(tmp_path / "c", prune, seed=4).ticket
    assert all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)
    assert all(torch.equal(a.init[k], b.init[k]) for k in a.init)
    assert any(not torch.equal(a.mask[k], c.mask[k]) for k in a.mask)


def test_run_dir_is_never_overwritten_without_permission(tmp_path):
    out = tmp_path / "run"
    config = {"seed": 1}
    prepare_run_dir(out, config, resume=False, overwrite=False)
    (out / "config.yaml").write_text("seed: 1\n")
    (out / "precious.txt").write_text("results")
    with pytest.raises(RunDirError, match="--resume"):
        prepare_run_dir(out, config, resume=False, overwrite=False)
    assert (out / "precious.txt").is_file()
    with pytest.raises(RunDirError, match="seed"):
        prepare_run_dir(out, {"seed": 2}, resume=True, overwrite=False)
    assert prepare_run_dir(out, config, resume=True, overwrite=False).path == out
    prepare_run_dir(out, config, resume=False, overwrite=True)
    assert not (out / "precious.txt").exists()
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(RunDirError, match="not a COLT run"):
        prepare_run_dir(other, config, resume=False, overwrite=True)
    assert (other / "thesis.tex").is_file()


def test_corrupt_files_give_clear_errors(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    atomic_save({"format": 1, "mask": {"w": torch.ones(2, dtype=torch.bool)}, "init": {"w": torch.ones(3)},
                 "architecture": {}}, tmp_path / "t.pt")
    with pytest.raises(TicketError, match="shape"):
        load_ticket(tmp_path / "t.pt")
    atomic_save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(TicketError, match="not a COLT ticket"):
        load_ticket(tmp_path / "other.pt")


def test_ticket_refuses_a_mismatched_model(tmp_path):
    prune = PruneConfig(partitions=2, rates={"conv": 0.2, "fc": 0.3}, max_rounds=1, evaluate="none")
    run_loop(tmp_path / "run", prune)
    other = ToyNet(6)
    other.fc1 = torch.nn.Linear(64, 8)
    with pytest.raises(TicketError, match=r"fc1\.weight"):
        load_ticket(tmp_path / "run" / "ticket.pt", other, output_layers=["head"])
    assert load_ticket(tmp_path / "run" / "ticket.pt", ToyNet(2), output_layers=["head"])  # other head size


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, str(TOY_RUN), "--out", str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    reference = _start(out)
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()
    return out


@pytest.mark.parametrize("kill_after", ["round_00/partition_1/train_state.pt", "round_01/mask.pt"])
def test_killed_run_resumes_to_the_same_ticket(tmp_path, reference_run, kill_after):
    proc = _start(tmp_path / "killed", "--sleep", "0.1")
    deadline = time.time() + 240
    while not (tmp_path / "killed" / kill_after).exists():
        assert proc.poll() is None, "run ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "ticket.pt").exists()
    again = _start(tmp_path / "killed")
    assert again.wait(timeout=300) != 0  # refuses to touch the directory without --resume
    resumed = _start(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    ref = torch.load(reference_run / "ticket.pt", weights_only=True)
    got = torch.load(tmp_path / "killed" / "ticket.pt", weights_only=True)
    for part in ("mask", "init"):
        assert ref[part].keys() == got[part].keys()
        assert all(torch.equal(ref[part][k], got[part][k]) for k in ref[part])
    for r in range(3):
        for p in range(2):
            name = f"round_{r:02d}/partition_{p}/model.pt"
            if (reference_run / name).exists():
                a = torch.load(reference_run / name, weights_only=True)
                b = torch.load(tmp_path / "killed" / name, weights_only=True)
                assert all(torch.equal(a[k], b[k]) for k in a), name
