"""Exports from run directories: exact dense and sparse round trips, file sizes, tickets, and clear errors."""

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from toy import NUM_CLASSES, ToyNet, run_toy

from colt_core.config import to_dict
from colt_core.export import (
    ExportError,
    ExportTarget,
    SparseFormatError,
    export_run,
    load_round_ticket,
    load_sparse,
    load_sparse_mask,
    save_sparse,
)
from colt_core.io import atomic_save, read_json
from colt_core.prune.ticket import load_ticket
from colt_core.rundir import RunDir, RunDirError, prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig

pytestmark = pytest.mark.usefixtures("one_thread")


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
    back = load_sparse_mask(tmp_path / "s.pt")
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
    assert all(torch.equal(load_sparse_mask(result.files["sparse"])[k], mask[k]) for k in mask)

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
