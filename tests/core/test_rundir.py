"""The run directory: one layout, records that read back what they wrote, and summaries of older runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from colt_core.io import atomic_write_json
from colt_core.rundir import (
    SUMMARY_SCHEMA,
    Evaluation,
    PartitionResult,
    RoundRecord,
    RunDir,
    RunDirError,
    RunSummary,
    TrainingRecord,
    open_run,
    read_summary,
    write_summary,
)

# summary.json as the round loop wrote it before the summary had a schema version (a COLT-2 detection run).
SCHEMA_1 = {
    "method": "colt", "partitions": 2,
    "rounds": [
        {"round": 0, "sparsity": 0.0, "prune_rate": 0.0, "groups": {"conv": 0.0, "fc": 0.0},
         "partitions": [{"best_val_loss": 0.61, "best_epoch": 17, "history": [{"loss": 0.7, "epoch": 17}],
                         "data": {"train": {"images": 210}}, "wall_time_s": 70.5, "classes": [0, 3]},
                        {"best_val_loss": 0.66, "best_epoch": 16, "val_accuracy": 0.8, "history": [],
                         "data": {}, "wall_time_s": 65.0, "classes": [1, 2]}],
         "eval": {"metric": "voc07 mAP", "value": 0.74, "per_class": {"cat": 0.7, "dog": 0.78},
                  "test_images": 100, "voc07": {"mAP": 0.74}, "train": {"reused": "round_00/partition_0"},
                  "wall_time_s": 12.0},
         "wall_time_s": 147.5},
        {"round": 1, "sparsity": 0.5643, "prune_rate": 0.5519, "groups": {"conv": 0.56, "fc": 0.6},
         "eval": {"metric": "voc07 mAP", "value": 0.749, "per_class": {"cat": 0.8, "dog": 0.7},
                  "train": {"best_val_loss": 0.9, "best_epoch": 15, "history": [], "data": {}},
                  "wall_time_s": 90.0},
         "wall_time_s": 90.0},
    ],
}


def test_a_summary_without_a_schema_reads_as_schema_one_and_writes_back_the_same_fields(tmp_path: Path):
    run = RunDir(tmp_path)
    atomic_write_json(SCHEMA_1, run.summary)
    summary = read_summary(run)
    assert (summary.method, summary.partitions, summary.label) == ("colt", 2, "COLT-2")
    first, final = summary.rounds
    assert first.partitions[1].training.val_metrics == {"accuracy": 0.8}
    assert first.evaluation.reused == "round_00/partition_0" and first.evaluation.training is None
    assert first.evaluation.get("test_images") == 100 and first.search_time_s == 135.5
    assert final.partitions is None and final.evaluation.training.best_epoch == 15
    assert [r.round for r in summary.evaluated] == [0, 1]
    write_summary(run, summary)
    again = json.loads(run.summary.read_text())
    assert again.pop("schema") == SUMMARY_SCHEMA
    assert again == SCHEMA_1


def test_records_round_trip_and_a_newer_schema_is_refused(tmp_path: Path):
    record = RoundRecord(round=2, sparsity=0.5, prune_rate=0.4, groups={"conv": 0.5},
                         partitions=[PartitionResult([1, 4], TrainingRecord(3, 0.25, {"accuracy": 0.9}), 1.5)],
                         evaluation=Evaluation("top-1 accuracy", 0.9, {"c0": 1.0}, {"top5": 1.0},
                                               TrainingRecord(1, 0.3), wall_time_s=2.0),
                         wall_time_s=3.5)
    assert RoundRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(RunDirError, match=r"schema 3 is newer than this code reads \(2\)"):
        RunSummary.from_dict({**SCHEMA_1, "schema": 3}, source="x/summary.json")
    with pytest.raises(RunDirError, match=r"x/summary.json: not a run summary"):
        RunSummary.from_dict({"rounds": []}, source="x/summary.json")
    with pytest.raises(TypeError, match="at least 'metric' and 'value'"):
        Evaluation.from_task({"accuracy": 0.5}, source="Task.evaluate")


def test_the_layout_names_every_file_once(tmp_path: Path):
    run = RunDir(tmp_path / "r")
    assert run.round(3).partition(1).model == tmp_path / "r" / "round_03" / "partition_1" / "model.pt"
    assert run.round(3).eval.outputs == tmp_path / "r" / "round_03" / "eval" / "results"
    assert run.tensorboard_for("round_03/p1") == tmp_path / "r" / "tb" / "round_03_p1"
    assert run.per_class("ap", "csv").name == "per_class_ap.csv" and run.training.model == tmp_path / "r" / "model.pt"
    with pytest.raises(RunDirError, match="no such run directory"):
        open_run(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(RunDirError, match=r"lacks config\.yaml or init\.pt"):
        open_run(run.path)
    for r in (0, 2):
        run.round(r).path.mkdir(parents=True)
        run.round(r).mask.write_bytes(b"")
    (run.path / "round_x").mkdir()
    assert run.rounds() == [0, 2] and not run.is_finished()


def test_a_run_written_before_a_setting_existed_resumes_when_it_used_that_settings_default(tmp_path: Path):
    from colt_core.config import from_dict, to_dict
    from colt_core.rundir import prepare_run_dir
    from colt_core.settings import RunConfig

    cfg = RunConfig()
    current = to_dict(cfg)

    def complete(stored: dict) -> dict:
        return to_dict(from_dict(RunConfig, stored))

    run = prepare_run_dir(tmp_path / "run", current, resume=False, overwrite=False)
    older = json.loads(json.dumps(current))
    del older["train"]["grad_clip"], older["data"]["num_workers"]  # settings this run predates
    run.config.write_text(yaml.safe_dump(older))
    with pytest.raises(RunDirError, match=r"differs from the stored run's at data\.num_workers;"):
        prepare_run_dir(run.path, current, resume=True, overwrite=False)  # compared as written: 2 vs absent
    assert prepare_run_dir(run.path, current, resume=True, overwrite=False, complete=complete) == run
    other = to_dict(RunConfig(seed=5))
    with pytest.raises(RunDirError, match="differs from the stored run's at seed"):
        prepare_run_dir(run.path, other, resume=True, overwrite=False, complete=complete)
    run.config.write_text(yaml.safe_dump({**older, "colour": "red"}))
    with pytest.raises(RunDirError, match=r"config\.yaml: the stored config does not load \(colour: unknown key"):
        prepare_run_dir(run.path, current, resume=True, overwrite=False, complete=complete)


def _old_run(path: Path) -> RunDir:
    run = RunDir(path)
    (run.round(0).path / "partition_0").mkdir(parents=True)
    run.config.write_text("seed: 1\n")
    (run.round(0).path / "partition_0" / "model.pt").write_bytes(b"weights")
    return run


def test_checking_a_run_dir_changes_nothing_and_starting_it_replaces_the_old_run_but_not_the_lock(tmp_path: Path):
    from colt_core.rundir.policy import RunDirLock, check_run_dir, start_run_dir

    run = _old_run(tmp_path / "run")
    with RunDirLock(run.path):
        listing = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
        assert check_run_dir(run.path, {"seed": 1}, resume=False, overwrite=True) is True
        assert check_run_dir(run.path, {"seed": 1}, resume=True, overwrite=False) is False
        assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == listing  # nothing changed
        start_run_dir(run.path, replace=True)
        assert sorted(p.name for p in run.path.iterdir()) == [".writer.lock", ".writer.pid"]
        assert run.contents() == []
        # A directory that holds only the writer's files holds no run: it starts afresh, with or without --resume.
        assert check_run_dir(run.path, {"seed": 2}, resume=True, overwrite=False) is False
        assert check_run_dir(run.path, {"seed": 2}, resume=False, overwrite=False) is False
    assert sorted(p.name for p in run.path.iterdir()) == [".writer.lock"]  # the holder's id goes with the lock


def test_a_second_lock_on_a_run_dir_is_refused_naming_the_holder_until_it_is_released(tmp_path: Path):
    import os

    from colt_core.rundir.policy import RunDirBusyError, RunDirLock

    run = _old_run(tmp_path / "run")
    first, second = RunDirLock(run.path), RunDirLock(run.path)
    first.acquire()
    with pytest.raises(RunDirBusyError) as refused:
        second.acquire()
    assert str(refused.value).startswith(f"{run.path} is being written by another process (pid {os.getpid()})")
    first.release()
    second.acquire()  # released: the next writer takes it
    assert run.writer.read_text().split()[0] == str(os.getpid())
    second.release()
    second.release()  # releasing a lock not held does nothing


def test_a_folder_that_holds_no_run_is_refused_before_a_lock_file_is_written_into_it(tmp_path: Path):
    from colt_core.rundir.policy import RunDirLock

    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(RunDirError, match=r"not empty and not a COLT run directory \(no config\.yaml\)"):
        RunDirLock(tmp_path).acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]
