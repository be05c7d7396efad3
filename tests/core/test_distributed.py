"""Runs spread over torchrun ranks: partition assignment, the same ticket as one process, failing ranks.

The multi-process tests launch the toy runner (`toy_run.py`) through `python -m torch.distributed.run`
with the gloo backend on the CPU, one thread per rank.
"""

import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy import ToyNet

from colt_core.distributed import (
    DistContext,
    DistributedError,
    all_reduce_sums,
    check_same_across_ranks,
    distributed_sampler,
    gather_to_main,
    init_distributed,
    partition_ranks,
    run_on_group_main,
    run_on_main,
    shard_for_evaluation,
    tensor_checksum,
    wrap_ddp,
)
from colt_core.io import read_json

TOY_RUN = Path(__file__).with_name("toy_run.py")


# ----- in one process ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "k", "expected"), [
    (2, 2, [[0], [1]]),
    (3, 2, [[0], [1], [0]]),  # K < N: ranks take partitions in turn
    (4, 1, [[0], [0], [0], [0]]),
    (2, 4, [[0, 1], [2, 3]]),  # K > N: K/N contiguous ranks per partition, data-parallel
    (2, 3, [[0, 1], [2]]),
    (1, 3, [[0, 1, 2]]),  # LTH: one full-data partition over every rank
])
def test_partition_ranks_spread_partitions_over_ranks(n, k, expected):
    spread = partition_ranks(n, k)
    assert spread == expected
    assert {r for ranks in spread for r in ranks} == set(range(k))  # no rank idles
    if k > n:
        assert sorted(r for ranks in spread for r in ranks) == list(range(k))  # each rank in one group


def test_partition_ranks_rejects_nothing_to_spread():
    with pytest.raises(ValueError, match="at least one partition"):
        partition_ranks(0, 2)


def test_checksum_sees_every_value_name_and_dtype():
    mask = {"a": torch.tensor([True, False, True]), "b": torch.ones(2, 2, dtype=torch.bool)}
    same = {k: v.clone() for k, v in mask.items()}
    assert tensor_checksum(mask) == tensor_checksum(same)
    flipped = {**same, "a": torch.tensor([True, True, True])}
    assert tensor_checksum(flipped) != tensor_checksum(mask)
    assert tensor_checksum({"c": mask["a"], "b": mask["b"]}) != tensor_checksum(mask)
    assert tensor_checksum({"x": torch.zeros(3)}) != tensor_checksum({"x": torch.zeros(3, dtype=torch.float64)})


def test_alone_every_helper_is_a_plain_call(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed() is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed() is None  # torchrun with one process runs as a single process
    assert run_on_main(None, lambda a, b: a + b, 2, b=3) == 5
    assert run_on_group_main(None, lambda: "x") == "x"
    assert gather_to_main(None, {"p": 1}) == [{"p": 1}]
    check_same_across_ranks(None, {"w": torch.ones(2)}, "weights")
    model = ToyNet(3)
    assert wrap_ddp(model, None) is model
    data = list(range(10))
    assert distributed_sampler(data, None, shuffle=True, seed=1) is None
    assert shard_for_evaluation(data, None) is data
    assert all_reduce_sums([1, 2.5], None) == [1.0, 2.5]


def test_a_group_of_one_rank_needs_no_collective():
    alone = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), ranks=(1,))
    assert alone.is_group_main and not alone.data_parallel and not alone.is_main
    model = ToyNet(3)
    assert wrap_ddp(model, alone) is model
    assert run_on_group_main(alone, lambda: 7) == 7
    pair = DistContext(rank=3, world_size=4, local_rank=1, device=torch.device("cpu"), ranks=(2, 3))
    assert pair.data_parallel and pair.group_rank == 1 and not pair.is_group_main
    shard = shard_for_evaluation(list(range(7)), pair)
    assert [shard[i] for i in range(len(shard))] == [1, 3, 5]


def test_bad_launch_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="RANK='zero'"):
        init_distributed()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("COLT_DIST_TIMEOUT_S", "soon")
    with pytest.raises(DistributedError, match="COLT_DIST_TIMEOUT_S='soon'"):
        init_distributed()


# ----- through torchrun --------------------------------------------------------------------------------
def _launch(out: Path, *extra: str, ranks: int | None = 2, timeout: float = 120,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run toy_run.py (under torchrun with `ranks` processes, or alone); exit code and output.

    The launcher gets a session of its own so that a run that hangs is killed with all its ranks.
    """
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [sys.executable, *launcher, str(TOY_RUN), "--out", str(out), *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} still ran after {timeout} s (hang):\n{output[-3000:]}")
    return proc.returncode, output


def _masks(run: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(path, weights_only=True) for path in sorted(run.glob("round_*/mask.pt"))]


def _assert_same_masks(a: Path, b: Path) -> None:
    masks_a, masks_b = _masks(a), _masks(b)
    assert len(masks_a) == len(masks_b) >= 3
    for r, (ma, mb) in enumerate(zip(masks_a, masks_b, strict=True)):
        assert ma.keys() == mb.keys()
        assert all(torch.equal(ma[k], mb[k]) for k in ma), f"round {r}: masks differ"
    ticket_a = torch.load(a / "ticket.pt", weights_only=True)
    ticket_b = torch.load(b / "ticket.pt", weights_only=True)
    assert all(torch.equal(ticket_a["mask"][k], ticket_b["mask"][k]) for k in ticket_a["mask"])


def _files(run: Path) -> set[str]:
    # TensorBoard event file names hold the host and process id; everything else must match.
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.relative_to(run).parts[0] != "tb"}


@pytest.fixture(scope="module")
def single_process_colt2(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    code, output = _launch(out, ranks=None)
    assert code == 0, output
    return out


def test_two_ranks_find_the_same_ticket_as_one_process(tmp_path, single_process_colt2):
    code, output = _launch(tmp_path / "run")
    assert code == 0, output
    _assert_same_masks(single_process_colt2, tmp_path / "run")
    # Each partition model is the one the single process trained (K = N: one rank per partition, same seeds).
    for model in sorted(single_process_colt2.glob("round_*/partition_*/model.pt")):
        a = torch.load(model, weights_only=True)
        b = torch.load(tmp_path / "run" / model.relative_to(single_process_colt2), weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), model
    # Rank 0 wrote the same run directory a single process writes, and no rank left working files behind.
    assert _files(tmp_path / "run") == _files(single_process_colt2)
    assert not list((tmp_path / "run").rglob("train_state.pt"))


def test_two_ranks_sharing_one_device_find_the_same_ticket_and_scores_as_one_process(tmp_path, single_process_colt2):
    """K = 2 ranks on G = 1 device: the partitions train side by side, the full-data trainings on rank 0 alone
    (never two training ranks on one device), so masks, models and scores are the single process's."""
    code, output = _launch(tmp_path / "run", env={"COLT_DEVICES_PER_NODE": "1"})
    assert code == 0, output
    assert "2 ranks per node share 1 device(s)" in output
    assert "waits during the full-data trainings (its device is shared)" in output
    _assert_same_masks(single_process_colt2, tmp_path / "run")
    for model in sorted(single_process_colt2.glob("round_*/*/model.pt")):  # partitions and evaluations alike
        a = torch.load(model, weights_only=True)
        b = torch.load(tmp_path / "run" / model.relative_to(single_process_colt2), weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), model
    ours, theirs = read_json(tmp_path / "run" / "summary.json"), read_json(single_process_colt2 / "summary.json")
    assert [r["eval"]["value"] for r in ours["rounds"]] == [r["eval"]["value"] for r in theirs["rounds"]]
    bad = _launch(tmp_path / "bad", env={"COLT_DEVICES_PER_NODE": "none"})
    assert bad[0] != 0 and "COLT_DEVICES_PER_NODE='none': expected an integer >= 1" in bad[1]


def test_fewer_ranks_than_partitions_take_partitions_in_turn(tmp_path):
    code, output = _launch(tmp_path / "single", "--partitions", "3", ranks=None)
    assert code == 0, output
    code, output = _launch(tmp_path / "two", "--partitions", "3")
    assert code == 0, output
    assert "trains partition(s) [0, 2]" in output and "trains partition(s) [1]" in output
    _assert_same_masks(tmp_path / "single", tmp_path / "two")


def test_lth_trains_data_parallel_on_every_rank(tmp_path):
    code, output = _launch(tmp_path / "run", "--method", "lth")
    assert code == 0, output  # the ranks' selected weights are compared after every training
    assert "trains partition(s) [0]" in output and output.count("rounds 5") == 2
    run = tmp_path / "run"
    masks = _masks(run)
    for earlier, later in itertools.pairwise(masks):
        assert all(not (later[k] & ~earlier[k]).any() for k in later)
    final = torch.load(run / f"round_{len(masks) - 1:02d}" / "eval" / "model.pt", weights_only=True)
    assert all(not final[k][~masks[-1][k]].any() for k in masks[-1])  # pruned weights stayed zero under DDP
    summary = read_json(run / "summary.json")
    assert summary["rounds"][0]["eval"]["train"] == {"reused": "round_00/partition_0"}


def test_a_failing_rank_stops_the_run_and_resume_finishes_it(tmp_path, single_process_colt2):
    run = tmp_path / "run"
    code, output = _launch(run, "--fail-rank", "1", "--fail-round", "1", "--fail-mode", "raise", timeout=60)
    assert code != 0
    assert "rank 1 of 2" in output and "injected failure in round 1" in output
    assert not (run / "ticket.pt").exists()
    assert (run / "round_01" / "mask.pt").is_file()
    code, output = _launch(run, "--resume")
    assert code == 0, output
    _assert_same_masks(single_process_colt2, run)


def test_a_killed_rank_ends_the_run_with_an_error(tmp_path):
    code, output = _launch(tmp_path / "run", "--fail-rank", "1", "--fail-mode", "exit", timeout=60)
    assert code != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*3", output), output[-3000:]


def test_a_hanging_rank_times_out_with_an_error(tmp_path):
    code, output = _launch(tmp_path / "run", "--fail-rank", "1", "--fail-mode", "hang", timeout=60,
                           env={"COLT_DIST_WAIT_TIMEOUT_S": "3"})
    assert code != 0
    assert "rank 0: waiting for the partition trainings of round 1 failed" in output
    assert "no answer from the other ranks within COLT_DIST_WAIT_TIMEOUT_S" in output
