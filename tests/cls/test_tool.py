"""tools/train_colt_cls.py end to end on synthetic data: COLT-2/3 and LTH runs, ticket transfer, bad input."""

from __future__ import annotations

import csv
import itertools
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from colt_cls.models import create_model
from colt_core.io import read_json
from colt_core.prune.ticket import load_ticket


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def invoke(tool, *args: str):
    return CliRunner().invoke(tool, [str(a) for a in args], catch_exceptions=True)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    # A click error exits through SystemExit; an uncaught exception would be kept here with its traceback.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def masks_of(run: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(path, weights_only=True) for path in sorted(run.glob("round_*/mask.pt"))]


@pytest.mark.parametrize(("method", "partitions"), [("colt", 2), ("colt", 3), ("lth", 1)])
def test_two_round_run_writes_the_run_directory_and_report(
        train_tool, run_config, small_cifar10_root: Path, tmp_path: Path, method: str,
        partitions: int) -> None:
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", run_config(small_cifar10_root, run, prune={
        "method": method, "partitions": partitions, "rates": {"conv": 0.3, "fc": 0.2}}))
    result = invoke(train_tool, "--cfg", cfg)
    assert result.exit_code == 0, result.output

    split = read_json(run / "split.json")
    groups = split["groups"]
    assert len(groups) == partitions and sorted(c for g in groups for c in g) == list(range(10))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert split["class_names"][:2] == ["airplane", "automobile"]
    for name in ("config.yaml", "init.pt", "ticket.pt", "summary.json", "report.md", "rounds.csv",
                 "rounds.json", "per_class_accuracy.csv"):
        assert (run / name).is_file(), name
    assert any((run / "tb").rglob("events.out.tfevents.*"))

    masks = masks_of(run)
    assert len(masks) == 3  # rounds 0 and 1 trained and pruned; round 2 holds the final ticket
    for before, after in itertools.pairwise(masks):
        assert all(not (after[k] & ~before[k]).any() for k in after)  # pruned weights never return
        assert sum(int(m.sum()) for m in after.values()) < sum(int(m.sum()) for m in before.values())
    for r in range(2):
        for p, group in enumerate(groups):
            state = torch.load(run / f"round_{r:02d}" / f"partition_{p}" / "model.pt", weights_only=True)
            assert state["fc.weight"].shape[0] == len(group)  # labels remapped to the partition's classes
            assert all(torch.all(state[k][~m] == 0) for k, m in masks[r].items())

    summary = read_json(run / "summary.json")
    final = summary["rounds"][-1]
    ticket = load_ticket(run / "ticket.pt", create_model("conv3", 10, width=0.125), output_layers=["fc"])
    assert ticket.architecture["task"] == "classification"
    assert all(torch.equal(ticket.mask[k], masks[-1][k]) for k in masks[-1])
    assert final["sparsity"] == pytest.approx(ticket.sparsity["overall"]["sparsity"])
    for r in (0, 2):
        evaluation = summary["rounds"][r]["eval"]
        assert evaluation["metric"] == "top-1 accuracy" and 0.0 <= evaluation["value"] <= 1.0
        assert 0.0 <= evaluation["top5"] <= 1.0 and len(evaluation["per_class"]) == 10
    assert "eval" not in summary["rounds"][1]

    report = (run / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows[:3]] == ["0", "1", "2"]
    assert f"{100 * final['sparsity']:.2f}" in rows[2]
    assert f"{100 * summary['rounds'][0]['eval']['value']:.2f}" in rows[0]
    assert f"# COLT classification run: {'COLT-' + str(partitions) if method == 'colt' else 'LTH'}" in report
    with open(run / "rounds.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [int(row["round"]) for row in table] == [0, 1, 2] and table[1]["top-1 accuracy"] == ""
    assert "| 2 |" in result.output and "ticket:" in result.output


def test_rerun_refuses_without_resume_and_resume_finishes_from_disk(
        train_tool, run_config, small_cifar10_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", run_config(small_cifar10_root, run, prune={"max_rounds": 1,
                                                                                   "evaluate": "none"}))
    assert invoke(train_tool, "--cfg", cfg).exit_code == 0
    ticket_before = (run / "ticket.pt").read_bytes()
    assert_one_line_error(invoke(train_tool, "--cfg", cfg), "already holds a run", "--resume", "--overwrite")
    assert_one_line_error(invoke(train_tool, "--cfg", cfg, "--resume", "--overwrite"), "exclude each other")
    assert_one_line_error(invoke(train_tool, "--cfg", cfg, "--resume", "--set", "train.epochs=2"),
                          "the config differs from the stored run's at train.epochs")
    resumed = invoke(train_tool, "--cfg", cfg, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "ticket.pt").read_bytes() == ticket_before  # everything was on disk: nothing retrained
    assert invoke(train_tool, "--cfg", cfg, "--overwrite").exit_code == 0


def test_ticket_found_on_cifar100_trains_on_cifar10_and_mismatched_architectures_are_refused(
        train_tool, run_config, small_cifar10_root: Path, cifar100_root: Path, tmp_path: Path) -> None:
    source_run = tmp_path / "source"
    source = write_config(tmp_path / "source.yaml", run_config(
        cifar100_root, source_run, data={"name": "cifar100", "val_fraction": 0.5},
        prune={"max_rounds": 1, "evaluate": "none"}))
    assert invoke(train_tool, "--cfg", source).exit_code == 0
    ticket_path = source_run / "ticket.pt"

    target = write_config(tmp_path / "target.yaml", run_config(small_cifar10_root, tmp_path / "unused"))
    out = tmp_path / "transfer"
    result = invoke(train_tool, "--cfg", target, "--ticket", ticket_path, "--out", out)
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    assert metrics["ticket"]["architecture"]["dataset"] == "cifar100"
    assert metrics["ticket"]["architecture"]["num_classes"] == 100
    assert 0.0 <= metrics["value"] <= 1.0 and len(metrics["per_class"]) == 10
    ticket = load_ticket(ticket_path)
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["fc.weight"].shape == (10, ticket.init["fc.weight"].shape[1])
    assert all(torch.all(model[k][~m] == 0) for k, m in ticket.mask.items())
    report = (out / "report.md").read_text()
    assert "Ticket transfer to cifar10" in report and "cifar100 (100 classes)" in report
    assert read_json(out / "metrics.json") == metrics
    assert yaml.safe_load((out / "config.yaml").read_text())["ticket"] == str(ticket_path.resolve())

    wider = invoke(train_tool, "--cfg", target, "--ticket", ticket_path, "--out", tmp_path / "wider",
                   "--set", "model.width=0.25")
    assert_one_line_error(wider, "'features.0.weight' has shape (8, 3, 3, 3) in the ticket but (16, 3, 3, 3)")
    other = invoke(train_tool, "--cfg", target, "--ticket", ticket_path, "--out", tmp_path / "other",
                   "--set", "model.name=mobilenetv2")
    assert_one_line_error(other, "the ticket prunes 'features.0.weight', which this model does not have")
    missing = invoke(train_tool, "--cfg", target, "--ticket", tmp_path / "nope.pt", "--out", tmp_path / "x")
    assert_one_line_error(missing, "nope.pt: no such file")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ticket_path.read_bytes()[:5000])  # a truncated copy
    broken = invoke(train_tool, "--cfg", target, "--ticket", corrupt, "--out", tmp_path / "y")
    assert_one_line_error(broken, "corrupt.pt: cannot be read as a PyTorch file", "pass a ticket.pt written by")
    # The ticket is the user's own file: no advice to delete it, no torch paragraphs, nothing written.
    assert "recompute" not in broken.output and "miniz" not in broken.output
    assert len(broken.output.strip().splitlines()) == 1 and not (tmp_path / "y").exists()
    reinit = invoke(train_tool, "--cfg", target, "--ticket", ticket_path, "--control", "random_reinit",
                    "--out", tmp_path / "reinit")
    assert reinit.exit_code == 0, reinit.output
    control = read_json(tmp_path / "reinit" / "metrics.json")
    assert control["ticket"]["control"] == "random_reinit" and len(control["per_class"]) == 10
    trained = torch.load(tmp_path / "reinit" / "model.pt", weights_only=True)
    assert all(torch.all(trained[k][~m] == 0) for k, m in ticket.mask.items())  # the ticket's own mask
    assert "The random_reinit control of a ticket, on cifar10" in (tmp_path / "reinit" / "report.md").read_text()
    not_a_ticket = tmp_path / "weights.pt"
    torch.save(model, not_a_ticket)
    assert_one_line_error(invoke(train_tool, "--cfg", target, "--ticket", not_a_ticket, "--out", tmp_path / "z"),
                          "weights.pt: not a COLT ticket file", "pass a ticket.pt")


def test_bad_datasets_and_configs_end_in_one_error_line(
        train_tool, run_config, small_cifar10_root: Path, copy_of, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = write_config(tmp_path / "a.yaml", run_config(empty, tmp_path / "a"))
    assert_one_line_error(invoke(train_tool, "--cfg", cfg), "CIFAR-10 at", "cifar-10-batches-py",
                          "make_synthetic_cls.py")

    damaged = copy_of(small_cifar10_root)
    batch = damaged / "cifar-10-batches-py" / "data_batch_3"
    with open(batch, "rb") as handle:
        content = pickle.load(handle, encoding="latin1")
    del content["labels"]
    with open(batch, "wb") as handle:
        pickle.dump(content, handle)
    cfg = write_config(tmp_path / "b.yaml", run_config(damaged, tmp_path / "b"))
    assert_one_line_error(invoke(train_tool, "--cfg", cfg), "data_batch_3", "labels")

    cfg = write_config(tmp_path / "c.yaml", run_config(small_cifar10_root, tmp_path / "c",
                                                       data={"name": "tinyimagenet"}))
    assert_one_line_error(invoke(train_tool, "--cfg", cfg), "TinyImageNet at", "wnids.txt")
    assert_one_line_error(invoke(train_tool, "--cfg", cfg, "--set", "train.epoch=3"),
                          "train.epoch: unknown key")
    unknown_model = invoke(train_tool, "--cfg", cfg, "--set", "model.name=no_such_net", "--set",
                           "model.width=null", "--set", "data.name=cifar10")
    assert_one_line_error(unknown_model, "model: unknown model 'no_such_net'")
    assert_one_line_error(invoke(train_tool, "--cfg", "no_such_config"), "--cfg no_such_config: no such file")


def test_synthetic_section_writes_the_dataset_on_first_use(train_tool, run_config, tmp_path: Path) -> None:
    root = tmp_path / "data"
    cfg = write_config(tmp_path / "cfg.yaml", run_config(
        root, tmp_path / "run", data={"synthetic": {"seed": 1, "train_per_class": 6, "test_per_class": 2},
                                      "val_fraction": 0.34},
        prune={"max_rounds": 1, "evaluate": "final"}))
    result = invoke(train_tool, "--cfg", cfg)
    assert result.exit_code == 0, result.output
    assert (root / "cifar-10-batches-py" / "data_batch_1").is_file()
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["rounds"][-1]["eval"]["test_images"] == 20


def test_seeds_run_one_after_another_into_their_own_folders_and_resume(
        train_tool, run_config, small_cifar10_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    cfg = write_config(tmp_path / "cfg.yaml", run_config(small_cifar10_root, out, prune={"max_rounds": 1,
                                                                                   "evaluate": "final"}))
    result = invoke(train_tool, "--cfg", cfg, "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    configs = [yaml.safe_load((out / f"seed_{k}" / "config.yaml").read_text()) for k in (0, 1)]
    assert [c["seed"] for c in configs] == [0, 1]
    assert [c["output_dir"] for c in configs] == [str(out / "seed_0"), str(out / "seed_1")]
    assert {k: v for k, v in configs[0].items() if k not in ("seed", "output_dir")} == \
        {k: v for k, v in configs[1].items() if k not in ("seed", "output_dir")}
    masks = [torch.load(out / f"seed_{k}" / "ticket.pt", weights_only=True)["mask"] for k in (0, 1)]
    assert any(not torch.equal(masks[0][k], masks[1][k]) for k in masks[0])  # other seeds, other tickets
    assert f"compare them (with another method's seeds too) with: colt compare {out}/seed_*" \
        in result.output
    assert_one_line_error(invoke(train_tool, "--cfg", cfg, "--seeds", "0,1"), "seed_0 already holds a run")
    ticket = (out / "seed_1" / "ticket.pt").read_bytes()
    more = invoke(train_tool, "--cfg", cfg, "--seeds", "0,1,2", "--resume")  # finished seeds are read back
    assert more.exit_code == 0, more.output
    assert (out / "seed_1" / "ticket.pt").read_bytes() == ticket and (out / "seed_2" / "ticket.pt").is_file()
    bad = invoke(train_tool, "--cfg", cfg, "--seeds", "0,x")
    assert bad.exit_code == 2 and "Invalid value for '--seeds': '0,x': give comma-separated integers" in bad.output
