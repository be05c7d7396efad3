"""Exports from run directories: exact dense and sparse round trips, file sizes, tickets, and clear errors."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from toy import NUM_CLASSES, ToyNet, run_toy

from colt_core.commands.export import export_command
from colt_core.config import to_dict
from colt_core.export import (
    ExportError,
    ExportTarget,
    SparseFormatError,
    export_run,
    load_round_ticket,
    load_sparse,
    save_sparse,
    unfinished_run_architecture,
    write_onnx,
)
from colt_core.io import atomic_save, atomic_write_text, read_json
from colt_core.prune.ticket import load_ticket
from colt_core.registry import TaskEntry, register_task, unregister_task
from colt_core.rundir import RunDir, RunDirError, prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def make_run(out: Path, method: str = "colt", evaluate: str = "all", max_rounds: int = 3) -> Path:
    prune = PruneConfig(method=method, partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.9,
                        max_rounds=max_rounds, evaluate=evaluate)
    split = SplitConfig()
    config = {"seed": 3, "prune": to_dict(prune), "split": to_dict(split)}
    run_dir = prepare_run_dir(out, config, resume=False, overwrite=False)
    run_toy(run_dir, prune, split, seed=3, epochs=2)
    return run_dir.path


def toy_target(architecture) -> ExportTarget:
    return ExportTarget(model=ToyNet(NUM_CLASSES), output_layers=("head",))


@pytest.fixture(scope="module")
def colt_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "colt")


def masked(weights: dict, mask: dict) -> dict:
    return {k: v * mask[k] if k in mask else v for k, v in weights.items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def stored_positions(path: Path) -> dict[str, torch.Tensor]:
    """The survivor mask a sparse file stores for each tensor it keeps with positions, read from its records."""
    masks = {}
    for name, record in torch.load(path, weights_only=True)["tensors"].items():
        if record["encoding"] == "bitmask":
            n = int(torch.Size(record["shape"]).numel())
            masks[name] = torch.from_numpy(np.unpackbits(record["bits"].numpy(), count=n).astype(bool))
        elif record["encoding"] == "indices":
            masks[name] = torch.zeros(int(torch.Size(record["shape"]).numel()), dtype=torch.bool)
            masks[name][record["indices"].long()] = True
        if name in masks:
            masks[name] = masks[name].view(record["shape"])
    return masks


def exact_mask(shape: tuple[int, ...], sparsity: float, seed: int = 0) -> torch.Tensor:
    n = int(torch.Size(shape).numel())
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep = torch.ones(n, dtype=torch.bool)
    keep[order[: round(sparsity * n)]] = False
    return keep.view(shape)


# ----- the sparse file format -----------------------------------------------------------------------
def test_sparse_file_round_trips_every_tensor_exactly(tmp_path):
    gen = torch.Generator().manual_seed(1)
    state = {
        "conv.weight": torch.randn(32, 16, 3, 3, generator=gen),  # 90% pruned: bit mask
        "fc.weight": torch.randn(64, 128, generator=gen),  # 99.5% pruned: flat indices
        "fc2.weight": torch.randn(10, 64, generator=gen).half(),  # 1% pruned: still a bit mask
        "conv.bias": torch.randn(32, generator=gen),
        "bn.num_batches_tracked": torch.tensor(7),
        "emb.weight": torch.randn(5, 4, generator=gen, dtype=torch.float64),
    }
    mask = {"conv.weight": exact_mask((32, 16, 3, 3), 0.9), "fc.weight": exact_mask((64, 128), 0.995),
            "fc2.weight": exact_mask((10, 64), 0.01)}
    # A surviving weight that is exactly zero stays a survivor.
    state["conv.weight"].view(-1)[mask["conv.weight"].view(-1).nonzero()[0]] = 0.0
    state = masked(state, mask)
    save_sparse(state, tmp_path / "s.pt", mask)
    assert_same_state(load_sparse(tmp_path / "s.pt"), state)
    back = stored_positions(tmp_path / "s.pt")
    assert set(back) == set(mask) and all(torch.equal(back[k], mask[k]) for k in back)
    records = torch.load(tmp_path / "s.pt", weights_only=True)["tensors"]
    encodings = {k: r["encoding"] for k, r in records.items()}
    assert encodings == {"conv.weight": "bitmask", "fc.weight": "indices", "fc2.weight": "bitmask",
                         "conv.bias": "dense", "bn.num_batches_tracked": "dense", "emb.weight": "dense"}
    assert records["fc.weight"]["indices"].dtype == torch.int32

    # Without a mask, positions are the non-zeros of floating-point tensors, where that is smaller.
    save_sparse(state, tmp_path / "nomask.pt")
    assert_same_state(load_sparse(tmp_path / "nomask.pt"), state)
    records = torch.load(tmp_path / "nomask.pt", weights_only=True)["tensors"]
    assert records["conv.weight"]["encoding"] == "bitmask" and records["fc2.weight"]["encoding"] == "dense"


def test_sparse_file_at_90_percent_is_at_most_a_quarter_of_the_dense_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    shapes = {"0.weight": (64, 3, 3, 3), "2.weight": (128, 64, 3, 3), "5.weight": (256, 128, 3, 3)}
    state, mask = {}, {}
    for i, (name, shape) in enumerate(shapes.items()):
        mask[name] = exact_mask(shape, 0.9, seed=i)
        state[name] = torch.randn(shape, generator=gen) * mask[name]
        state[name.replace("weight", "bias")] = torch.randn(shape[0], generator=gen)
    atomic_save(state, tmp_path / "dense.pth")
    save_sparse(state, tmp_path / "sparse.pt", mask)
    dense_size, sparse_size = (tmp_path / "dense.pth").stat().st_size, (tmp_path / "sparse.pt").stat().st_size
    print(f"90% sparse: dense {dense_size} B, sparse {sparse_size} B ({100 * sparse_size / dense_size:.1f}%)")
    assert sparse_size <= 0.25 * dense_size
    assert_same_state(load_sparse(tmp_path / "sparse.pt"), state)


def test_sparse_file_refuses_weights_outside_the_mask_and_damaged_files(tmp_path):
    w = torch.ones(4, 4)
    with pytest.raises(ValueError, match="outside the mask are not zero"):
        save_sparse({"w": w}, tmp_path / "x.pt", {"w": exact_mask((4, 4), 0.5)})
    with pytest.raises(ValueError, match="mask shape"):
        save_sparse({"w": w}, tmp_path / "x.pt", {"w": torch.ones(3, dtype=torch.bool)})

    atomic_save({"weights": w}, tmp_path / "other.pt")
    with pytest.raises(SparseFormatError, match="not a COLT sparse"):
        load_sparse(tmp_path / "other.pt")
    mask = exact_mask((40, 40), 0.9)
    save_sparse({"w": torch.randn(40, 40) * mask}, tmp_path / "ok.pt", {"w": mask})
    data = torch.load(tmp_path / "ok.pt", weights_only=True)
    data["tensors"]["w"]["values"] = data["tensors"]["w"]["values"][:-1]
    atomic_save(data, tmp_path / "damaged.pt")
    with pytest.raises(SparseFormatError, match=r"damaged\.pt: tensor 'w'.*positions but"):
        load_sparse(tmp_path / "damaged.pt")


# ----- exporting a run ------------------------------------------------------------------------------
def test_final_ticket_export_matches_the_run_files(colt_run, tmp_path):
    result = export_run(colt_run, tmp_path / "out", toy_target)
    ticket = load_ticket(colt_run / "ticket.pt")
    final = ticket.meta["rounds"]
    assert result.round == final
    mask = torch.load(colt_run / f"round_{final:02d}" / "mask.pt", weights_only=True)
    init = torch.load(colt_run / "init.pt", weights_only=True)
    expected = masked(init, mask)

    dense = torch.load(result.files["dense"], weights_only=True)
    assert_same_state(dense, expected)
    for name, keep in mask.items():
        assert not bool(keep.all()) and bool((dense[name][~keep] == 0).all())
    assert_same_state(load_sparse(result.files["sparse"]), dense)
    assert all(torch.equal(stored_positions(result.files["sparse"])[k], mask[k]) for k in mask)

    exported = load_ticket(result.files["ticket"], ToyNet(NUM_CLASSES), output_layers=["head"])
    assert all(torch.equal(exported.mask[k], mask[k]) for k in mask)
    assert all(torch.equal(exported.init[k], init[k]) for k in init)
    assert exported.architecture == ticket.architecture

    own_report = read_json(colt_run / f"round_{final:02d}" / "sparsity.json")
    stored = read_json(result.files["sparsity_json"])
    assert stored["model"] == own_report
    assert stored["exported"]["overall"] == own_report["overall"]  # the toy model exports every weight
    table = result.files["sparsity_md"].read_text()
    assert "| conv.weight | conv |" in table and "prune rate" in table
    assert read_json(result.files["manifest"])["round"] == final


def test_round_and_trained_exports(colt_run, tmp_path):
    result = export_run(colt_run, tmp_path / "r1", toy_target, round=1)
    mask = torch.load(colt_run / "round_01" / "mask.pt", weights_only=True)
    init = torch.load(colt_run / "init.pt", weights_only=True)
    assert_same_state(torch.load(result.files["dense"], weights_only=True), masked(init, mask))

    trained = export_run(colt_run, tmp_path / "t1", toy_target, round=1, source="trained")
    model = torch.load(colt_run / "round_01" / "eval" / "model.pt", weights_only=True)
    dense = torch.load(trained.files["dense"], weights_only=True)
    assert_same_state(dense, masked(model, mask))
    assert not torch.equal(dense["fc1.weight"], init["fc1.weight"] * mask["fc1.weight"])  # it was trained
    assert_same_state(load_sparse(trained.files["sparse"]), dense)


def test_lth_trained_export_of_a_reused_evaluation(tmp_path):
    run = make_run(tmp_path / "lth", method="lth", evaluate="all", max_rounds=2)
    assert not (run / "round_00" / "eval" / "model.pt").exists()
    result = export_run(run, tmp_path / "out", toy_target, round=0, source="trained")
    model = torch.load(run / "round_00" / "partition_0" / "model.pt", weights_only=True)
    assert_same_state(torch.load(result.files["dense"], weights_only=True), model)


def test_export_errors_are_one_clear_line(colt_run, tmp_path):
    with pytest.raises(ExportError, match=r"round 9 does not exist; rounds on disk: 0, 1, 2, 3"):
        export_run(colt_run, tmp_path / "x", toy_target, round=9)
    with pytest.raises(RunDirError, match="not a COLT run directory"):
        export_run(tmp_path, tmp_path / "x", toy_target)
    with pytest.raises(RunDirError, match="no such run directory"):
        export_run(tmp_path / "missing", tmp_path / "x", toy_target)

    class WiderToyNet(ToyNet):
        def __init__(self, num_outputs: int) -> None:
            super().__init__(num_outputs)
            self.fc1 = nn.Linear(64, 48)

    with pytest.raises(ExportError, match=r"mismatched architecture: .*'fc1.weight' has shape \(32, 64\)"):
        export_run(colt_run, tmp_path / "x", lambda arch: ExportTarget(WiderToyNet(NUM_CLASSES), ("head",)))

    def unbuildable(arch):
        raise ValueError("no such model")

    with pytest.raises(ExportError, match="cannot build the model of architecture 'toynet': no such model"):
        export_run(colt_run, tmp_path / "x", unbuildable)

    sparse_eval = make_run(tmp_path / "first_last", evaluate="first_last")
    with pytest.raises(ExportError, match=r"round 1 has no trained full-data model .* --source ticket, "
                                          r"or a round with one: 0, 3"):
        export_run(sparse_eval, tmp_path / "x", toy_target, round=1, source="trained")
    with pytest.raises(ExportError, match="is the run directory itself"):
        export_run(colt_run, colt_run, toy_target)
    with pytest.raises(ExportError, match="source must be one of"):
        export_run(sparse_eval, tmp_path / "x", toy_target, source="best")
    assert not (tmp_path / "x").exists()  # nothing is written before the checks pass


def test_unfinished_run_exports_its_rounds_only(colt_run, tmp_path):
    run = tmp_path / "unfinished"
    shutil.copytree(colt_run, run)
    (run / "ticket.pt").unlink()
    shutil.rmtree(run / "round_03")
    with pytest.raises(ExportError, match=r"unfinished \(no ticket.pt\); choose one of its rounds with "
                                          r"--round N \(rounds on disk: 0, 1, 2\)"):
        export_run(run, tmp_path / "x", toy_target)
    with pytest.raises(ExportError, match=r"round 3 does not exist \(the run is unfinished"):
        export_run(run, tmp_path / "x", toy_target, round=3, architecture={"name": "toynet"})
    with pytest.raises(ExportError, match="no architecture description"):
        load_round_ticket(RunDir(run), 2)
    result = export_run(run, tmp_path / "r2", toy_target, round=2, architecture={"name": "toynet", "dim": 16})
    mask = torch.load(run / "round_02" / "mask.pt", weights_only=True)
    init = torch.load(run / "init.pt", weights_only=True)
    assert_same_state(torch.load(result.files["dense"], weights_only=True), masked(init, mask))
    assert load_ticket(result.files["ticket"]).architecture == {"name": "toynet", "dim": 16}


# ----- what a run's task supplies ----------------------------------------------------------------------------
def toy_onnx(model: nn.Module, out_dir: Path, size: int | None) -> tuple[Path, str | None]:
    path = out_dir / "toy.onnx"
    path.write_bytes(b"not really onnx")
    return path, None if size is None else f"checked on side {size}"


@pytest.fixture
def toy_task():
    """The toy front end registered under the task its tickets and configs name, as a front end registers."""
    def target(architecture) -> ExportTarget:
        return ExportTarget(model=ToyNet(NUM_CLASSES), output_layers=("head",), onnx=toy_onnx,
                            loading_hints=("loads with ToyNet(6).load_state_dict",))

    def architecture(config, num_classes):
        return {"name": "toynet", "task": "toy", "dim": config["dim"], "classes": num_classes}

    entry = register_task(TaskEntry(name="toy", config=dict, build=lambda *a: None, report_style=lambda c: None,
                                    export_target=target, architecture_from_config=architecture))
    yield entry
    unregister_task("toy")


def test_the_export_target_and_the_onnx_file_come_from_the_tickets_task(colt_run, toy_task, tmp_path):
    result = export_run(colt_run, tmp_path / "out")  # the ticket's architecture names the task "toy"
    assert result.target.loading_hints == ("loads with ToyNet(6).load_state_dict",)
    assert write_onnx(result) == f"{tmp_path / 'out' / 'toy.onnx'} (not run: onnxruntime is not installed)"
    assert result.files["onnx"] == tmp_path / "out" / "toy.onnx" and result.sizes["onnx"] == 15
    assert write_onnx(result, 48).endswith("(checked on side 48)")

    plain = export_run(colt_run, tmp_path / "plain", toy_target)
    with pytest.raises(ExportError, match="'toynet' models have no ONNX export; leave out --onnx"):
        write_onnx(plain)
    unregister_task("toy")
    with pytest.raises(ExportError, match=r"cannot build the model of architecture 'toynet': .*unknown task 'toy'"):
        export_run(colt_run, tmp_path / "x", round=1)


def test_an_unfinished_runs_architecture_comes_from_its_configs_task(colt_run, toy_task, tmp_path):
    run = tmp_path / "unfinished"
    shutil.copytree(colt_run, run)
    (run / "ticket.pt").unlink()
    atomic_write_text("task: toy\ndim: 16\n", run / "config.yaml")
    assert unfinished_run_architecture(RunDir(run)) == {"name": "toynet", "task": "toy", "dim": 16,
                                                        "classes": NUM_CLASSES}  # the split's class count
    register_task(TaskEntry(name="toy", config=dict, build=lambda *a: None, report_style=lambda c: None,
                            export_target=toy_target))
    with pytest.raises(ExportError, match=r"the toy task cannot describe its model from config\.yaml; finish the "
                                          r"run with --resume"):
        unfinished_run_architecture(RunDir(run))


def test_the_export_command_lists_its_options_and_ends_with_an_example():
    result = CliRunner().invoke(export_command, ["--help"])
    assert result.exit_code == 0, result.output
    for option in ("RUN_DIR", "--out", "--round", "--final", "--source", "--onnx", "--onnx-size"):
        assert option in result.output, option
    assert result.output.rstrip().splitlines()[-1].lstrip().startswith("colt export runs/")


def test_the_export_tool_is_the_export_command():
    spec = importlib.util.spec_from_file_location("export_backbone_tool", REPO / "tools" / "export_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is export_command
