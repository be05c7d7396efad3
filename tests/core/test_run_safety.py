"""A run directory is safe: `--overwrite` never loses a run to a failure before the new one starts, one process
writes a run directory at a time (and a killed one never blocks `--resume`), and a full disk is one error line
after which `--resume` ends in the ticket an uninterrupted run finds, bit for bit."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from colt_core.commands import main as colt
from colt_core.registry import unregister_task

HERE = Path(__file__).resolve().parent
COLT_BLOBS = HERE / "colt_blobs.py"


@pytest.fixture(scope="module")
def blobs(one_thread):
    import blobs_task

    yield blobs_task.ENTRY
    unregister_task(blobs_task.NAME)
    sys.modules.pop("blobs_task", None)


def blobs_config(path: Path) -> Path:
    """Two rounds of COLT-2 on the blobs, two epochs per training: a run of a few seconds."""
    config = {"task": "blobs", "seed": 3,
              "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01},
                        "schedule": {"name": "constant"}, "progress": False},
              "eval": {"batch_size": 64},
              "prune": {"method": "colt", "partitions": 2, "rates": {"conv": 0.3, "fc": 0.3},
                        "target_sparsity": 0.5, "max_rounds": 2}}
    path.write_text(yaml.safe_dump(config))
    return path


def train(cfg: Path, out: Path, *flags: str) -> Result:
    return CliRunner().invoke(colt, ["train", "--cfg", str(cfg), "--out", str(out), *flags])


def error_line(result: Result) -> str:
    """The one `Error:` line a refused command printed (exit status 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def hashes(run: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file under `run` by relative path, leaving out the paths in `skip` and what is under them."""
    found = {}
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run).as_posix()
        if path.is_file() and not any(rel == s or rel.startswith(f"{s}/") for s in skip):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_same_ticket(a: Path, b: Path) -> None:
    """The two runs' tickets are equal bit for bit: the same file, and the same mask and θ0 tensors."""
    ta, tb = torch.load(a / "ticket.pt", weights_only=True), torch.load(b / "ticket.pt", weights_only=True)
    assert ta.keys() == tb.keys() and ta["architecture"] == tb["architecture"] and ta["sparsity"] == tb["sparsity"]
    for part in ("mask", "init"):
        assert ta[part].keys() == tb[part].keys()
        assert all(torch.equal(ta[part][k], tb[part][k]) for k in ta[part]), part
    assert (a / "ticket.pt").read_bytes() == (b / "ticket.pt").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(blobs, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run directory) of a blobs run that nothing interrupted."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cfg = blobs_config(tmp / "blobs.yaml")
    result = train(cfg, tmp / "run")
    assert result.exit_code == 0, result.output
    return cfg, tmp / "run"


# ----- --overwrite -----------------------------------------------------------------------------------------
@pytest.fixture
def cifar_run(tmp_path: Path, one_thread) -> tuple[Path, Path]:
    """(config, run directory) of a finished one-round classification run on a tiny synthetic CIFAR-10."""
    from colt_cls.synthetic import write_synthetic_cifar

    write_synthetic_cifar(tmp_path / "cifar", n_train_per_class=10, n_test_per_class=4, seed=0)
    run = tmp_path / "run"
    config = {"task": "classification", "seed": 0, "output_dir": str(run),
              "data": {"name": "cifar10", "root": str(tmp_path / "cifar"), "val_fraction": 0.2, "num_workers": 0},
              "model": {"name": "conv3", "width": 0.125},
              "train": {"epochs": 1, "batch_size": 50, "optimizer": {"name": "adam", "lr": 0.003},
                        "schedule": {"name": "constant"}, "progress": False, "cpu_threads": 1},
              "eval": {"batch_size": 250},
              "prune": {"method": "colt", "partitions": 2, "rates": {"conv": 0.15, "fc": 0.2},
                        "target_sparsity": 0.95, "max_rounds": 1, "evaluate": "final"}}
    (tmp_path / "cls.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(colt, ["train", "--cfg", str(tmp_path / "cls.yaml")])
    assert result.exit_code == 0, result.output
    return tmp_path / "cls.yaml", run


def test_a_failing_overwrite_leaves_the_old_run_byte_for_byte_and_a_good_one_replaces_it(cifar_run, tmp_path: Path):
    cfg, run = cifar_run
    (run / "round_00" / "left_by_the_old_run.txt").write_text("only the old run wrote this")
    before = hashes(run)
    assert ".writer.lock" in before and ".writer.pid" not in before  # the lock file stays, its holder's id goes
    base = ["train", "--cfg", str(cfg), "--overwrite"]
    missing_data = CliRunner().invoke(colt, [*base, "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert str(tmp_path / "nowhere") in error_line(missing_data)
    assert hashes(run) == before
    missing_weights = CliRunner().invoke(colt, [*base, "--set", f"model.pretrained_path={tmp_path / 'w.pth'}"])
    assert "w.pth" in error_line(missing_weights) and "does not exist" in error_line(missing_weights)
    assert hashes(run) == before

    replaced = CliRunner().invoke(colt, [*base, "--set", "seed=1"])
    assert replaced.exit_code == 0, replaced.output
    assert not (run / "round_00" / "left_by_the_old_run.txt").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1
    after = hashes(run)
    old_files = {name for name in before if not name.startswith("tb/")} - {"round_00/left_by_the_old_run.txt"}
    assert {name for name in after if not name.startswith("tb/")} == old_files  # TensorBoard files name their time
    assert after["init.pt"] != before["init.pt"] and after["ticket.pt"] != before["ticket.pt"]  # a new θ0, a new run


def test_help_says_what_overwrite_deletes():
    out = CliRunner().invoke(colt, ["train", "--help"]).output
    assert "--overwrite" in out and "delete everything the old run wrote there" in " ".join(out.split())


# ----- one writer ------------------------------------------------------------------------------------------
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from colt_core.rundir.policy import RunDirLock; "
        "lock = RunDirLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(120)")


def test_a_second_process_is_refused_naming_the_first_and_a_killed_ones_lock_never_blocks_resume(
        uninterrupted, tmp_path: Path):
    cfg, finished = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(HERE.parents[1])], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = hashes(run)
        for flags in ((), ("--resume",), ("--overwrite",)):
            line = error_line(train(cfg, run, *flags))
            assert f"{run} is being written by another process (pid {holder.pid})" in line, (flags, line)
            assert hashes(run) == before, flags  # nothing deleted, nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    resumed = train(cfg, run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_ticket(finished, run)


def finished_files(run: Path) -> set[str]:
    """The files of a run in progress that stay: not its TensorBoard logs, checkpoints or temporary files."""
    names = {path.relative_to(run).as_posix() for path in run.rglob("*") if path.is_file()}
    return {name for name in names if not name.startswith(("tb/", ".writer.pid"))
            and not name.endswith(("train_state.pt", ".tmp"))}


def test_a_run_killed_while_a_second_is_refused_resumes_to_the_uninterrupted_ticket(uninterrupted, tmp_path: Path):
    """A real `colt train` in a process of its own: a second process (with or without --resume) is refused while
    it trains; killed half-way (SIGKILL: no clean-up), its lock is gone and --resume ends in the same ticket."""
    cfg, reference = uninterrupted
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLT_BLOBS_SLEEP": "0.5"}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen([sys.executable, str(COLT_BLOBS), "train", "--cfg", str(cfg), "--out", str(run)],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (run / "round_00" / "partition_0" / "model.pt").is_file():  # mid-run: a training is done
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        written = finished_files(run)
        for flags in ((), ("--resume",), ("--overwrite",)):
            line = error_line(train(cfg, run, *flags))
            assert f"{run} is being written by another process (pid {first.pid})" in line, (flags, line)
        assert written <= finished_files(run)  # the first's files are all still there
        assert first.poll() is None, "the first run ended before it could be killed half-way"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not run.joinpath("ticket.pt").exists()
    resumed = train(cfg, run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_ticket(reference, run)


def test_under_torchrun_rank_0_locks_for_its_job_and_alone_replaces_the_old_run(uninterrupted, tmp_path: Path):
    """Two ranks of one job do not block each other: rank 0 holds the lock, checks the directory and deletes the
    old run for --overwrite; the job ends in the ticket one process finds."""
    cfg, reference = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "left_by_the_old_run.txt").write_text("only the old run wrote this")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(COLT_BLOBS),
           "train", "--cfg", str(cfg), "--out", str(run), "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # a session of its own: a hang is killed with all its ranks
    try:
        output, _ = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        pytest.fail(f"the torchrun job still ran after 120 s:\n{output[-3000:]}")
    assert job.returncode == 0, output[-3000:]
    assert not (run / "left_by_the_old_run.txt").exists() and not (run / ".writer.pid").exists()
    assert_same_ticket(reference, run)


# ----- a full disk -----------------------------------------------------------------------------------------
class FullDisk:
    """A file being written on a full disk: every write fails with ENOSPC."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


@pytest.mark.parametrize("target, nth", [
    ("round_01/partition_1/train_state.pt", 2),  # a checkpoint (torch.save) replacing the epoch before's
    ("round_01/mask.pt", 1),                     # a mask
    ("report.md", 2),                            # a report replacing the one round 0 wrote
])
def test_a_full_disk_is_one_error_line_and_resume_ends_in_the_uninterrupted_ticket(
        uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, nth: int):
    cfg, reference = uninterrupted
    run = tmp_path / "run"
    aimed, seen, at_fault = run / target, [], {}
    fdopen = os.fdopen

    def fdopen_on_a_full_disk(fd: int, *args, **kwargs):
        """The atomic writers' temporary file for `target`, on its `nth` write, is on a full disk."""
        file = fdopen(fd, *args, **kwargs)
        name = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if name.parent == aimed.parent and name.name.startswith(f".{aimed.name}.") and name.suffix == ".tmp":
            seen.append(name)
            if len(seen) == nth:
                at_fault.update(hashes(run, skip=("tb", ".writer.pid", name.relative_to(run).as_posix())))
                return FullDisk(file)
        return file

    monkeypatch.setattr(os, "fdopen", fdopen_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30, 3 * 2**20))
    line = error_line(train(cfg, run))
    assert line.startswith(f"Error: {aimed}: ENOSPC, no space left on the device while writing it (3.0 MiB free"), line
    assert "--resume" in line
    assert at_fault and hashes(run, skip=("tb",)) == at_fault  # no temporary left, every file before it intact
    assert not (run / ".writer.pid").exists()

    monkeypatch.setattr(os, "fdopen", fdopen)  # space freed
    resumed = train(cfg, run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_ticket(reference, run)
