"""Channel tickets (`prune.granularity: channel`): coupled channel groups from Torch-Pruning's dependency graph,
whole filters pruned, intersections, the random-channel control, and a toy channel run end to end."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from toy import ToyNet, ToyTask, run_toy

from colt_core.config import ConfigError, from_dict, to_dict
from colt_core.prune.channels import (
    ChannelPlanError,
    apply_channels,
    build_channel_plan,
    channel_scores,
    channels_to_prune,
    check_channel_mask,
    kept_channels,
    prune_by_channel,
    prune_channels,
    random_channel_mask,
)
from colt_core.prune.controls import make_control
from colt_core.prune.magnitude import LayerCollapseError, PruneGroup, magnitude_prune, resolve_prune_groups
from colt_core.prune.masks import intersect_masks, ones_mask
from colt_core.report.run_report import write_report
from colt_core.report.style import ReportStyle
from colt_core.rundir import prepare_run_dir, read_summary
from colt_core.settings import PruneConfig, SplitConfig
from colt_core.train.task import channel_plan

TOY_RUN = Path(__file__).with_name("toy_run.py")
SPECS = {"conv": {"types": ["Conv2d"]}, "fc": {"types": ["Linear"]}}


def plan_of(model: torch.nn.Module, output_layers: list[str], rate: float = 0.5, **kwargs):
    groups = resolve_prune_groups(model, SPECS, {"conv": rate, "fc": rate}, output_layers)
    return groups, build_channel_plan(model, groups, output_layers, torch.zeros(1, 3, 32, 32), **kwargs)


def random_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def rows_alive(mask: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return mask[name].flatten(1).any(1)


def assert_whole_filters(mask: dict[str, torch.Tensor]) -> None:
    """Every conv weight's mask is the product of a row vector and a column vector: whole filters, whole inputs."""
    for name, m in mask.items():
        if m.dim() < 3:
            continue
        rows, cols = m.flatten(2).any(2).any(1), m.flatten(2).any(2).any(0)
        expected = (rows[:, None] & cols[None, :])[..., None].expand(m.shape[0], m.shape[1], m[0, 0].numel())
        assert torch.equal(m.flatten(2), expected), name


@pytest.fixture(scope="module")
def resnet18():
    model = torchvision.models.resnet18(num_classes=10)
    groups, plan = plan_of(model, ["fc"])
    return model, groups, plan


@pytest.fixture(scope="module")
def mobilenet_v2():
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    groups, plan = plan_of(model, ["classifier.1"])
    return model, groups, plan


def test_resnet18_channel_mask_removes_whole_filters_and_residual_sums_keep_one_channel_set(resnet18):
    model, groups, plan = resnet18
    mask = ones_mask(model, [n for g in groups for n in g.params])
    pruned = prune_channels(random_weights(model, 0), mask, plan)
    assert_whole_filters(pruned)
    check_channel_mask(pruned, plan)
    # The convs whose outputs one residual stream adds keep one channel set; the convs reading it drop those inputs.
    for stream, readers in [
        (["conv1", "layer1.0.conv2", "layer1.1.conv2"], ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                                          "layer2.0.downsample.0"]),
        (["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"], ["layer2.1.conv1", "layer3.0.conv1"]),
        (["layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"], ["layer4.1.conv1"]),
    ]:
        kept = rows_alive(pruned, f"{stream[0]}.weight")
        assert int(kept.sum()) == kept.numel() // 2  # round(0.5 × channels) of the group went
        for conv in stream:
            assert torch.equal(rows_alive(pruned, f"{conv}.weight"), kept), conv
        for conv in readers:
            assert torch.equal(pruned[f"{conv}.weight"].transpose(0, 1).flatten(1).any(1), kept), conv
    # A block's inner channels are a group of their own: conv1's filters and conv2's inputs.
    inner = rows_alive(pruned, "layer3.0.conv1.weight")
    assert int(inner.sum()) == 128 and torch.equal(pruned["layer3.0.conv2.weight"].transpose(0, 1).flatten(1).any(1),
                                                   inner)
    # The output layer is in no mask, and reads the pruned last stream (a slim export drops its columns).
    assert "fc.weight" not in pruned and not plan.whole


def test_mobilenet_v2_depthwise_convs_keep_their_inputs_channels(mobilenet_v2):
    model, groups, plan = mobilenet_v2
    mask = ones_mask(model, [n for g in groups for n in g.params])
    pruned = prune_channels(random_weights(model, 1), mask, plan)
    check_channel_mask(pruned, plan)
    depthwise = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17
    for name in depthwise:
        block = name.rsplit(".", 2)[0]  # features.K.conv
        dw = rows_alive(pruned, f"{name}.weight")
        assert 0 < int(dw.sum()) < dw.numel()
        expand = f"{block}.0.0.weight" if f"{block}.0.0.weight" in pruned and block != "features.1.conv" else None
        if expand is not None:  # the 1x1 expansion conv feeding it keeps the same channels
            assert torch.equal(rows_alive(pruned, expand), dw), name
        projection = f"{block}.2.weight" if expand is not None else f"{block}.1.weight"
        assert torch.equal(pruned[projection].transpose(0, 1).flatten(1).any(1), dw), name  # reads them
    # Residual blocks (stride 1, same width) add their projections: one channel set for all of them.
    stream = [rows_alive(pruned, f"features.{k}.conv.2.weight") for k in (7, 8, 9, 10)]
    assert all(torch.equal(s, stream[0]) for s in stream)


def test_intersection_of_partition_channel_masks_is_the_channel_mask_of_the_common_channels(resnet18):
    model, groups, plan = resnet18
    mask = ones_mask(model, [n for g in groups for n in g.params])
    masks = [prune_channels(random_weights(model, seed), mask, plan) for seed in (2, 3, 4)]
    common = intersect_masks(masks)
    check_channel_mask(common, plan)
    keeps = [plan.keeps(m) for m in masks]
    for i, group in enumerate(plan.groups):
        assert torch.equal(group.alive(common), keeps[0][i] & keeps[1][i] & keeps[2][i]), group.name
    rebuilt = apply_channels(mask, plan, plan.keeps(common))  # the common channels alone say the whole mask
    assert all(torch.equal(rebuilt[n], common[n]) for n in mask)


@settings(max_examples=10, deadline=None)
@given(seed_a=st.integers(0, 2**31 - 1), seed_b=st.integers(0, 2**31 - 1))
def test_the_and_of_two_channel_masks_is_the_channel_mask_of_the_and_of_their_channels(resnet18, seed_a, seed_b):
    model, groups, plan = resnet18
    ones = ones_mask(model, [n for g in groups for n in g.params])

    def draw(seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(g.size, generator=gen) < 0.6 for g in plan.groups]

    a, b = draw(seed_a), draw(seed_b)
    both = intersect_masks([apply_channels(ones, plan, a), apply_channels(ones, plan, b)])
    direct = apply_channels(ones, plan, [x & y for x, y in zip(a, b, strict=True)])
    assert all(torch.equal(both[n], direct[n]) for n in ones)


def test_partitions_that_keep_disjoint_channels_collapse_the_layer():
    model = ToyNet(6)
    groups = resolve_prune_groups(model, {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}},
                                  {"conv": 0.5, "fc": 0.5}, ["head"])
    plan = build_channel_plan(model, groups, ["head"], torch.zeros(2, 16))
    ones = ones_mask(model, [n for g in groups for n in g.params])
    a = apply_channels(ones, plan, [torch.tensor([True, True, False, False])])
    b = apply_channels(ones, plan, [torch.tensor([False, False, True, True])])
    with pytest.raises(LayerCollapseError, match="no channel in common"):
        check_channel_mask(intersect_masks([a, b]), plan)
    with pytest.warns(RuntimeWarning, match="no channel in common"):
        check_channel_mask(intersect_masks([a, b]), plan, on_layer_collapse="warn")


def test_a_round_prunes_round_rate_times_alive_channels_never_all_lowest_score_first():
    alive = torch.tensor([True, True, False, True])
    scores = torch.tensor([3.0, 1.0, 0.0, 1.0])
    assert channels_to_prune(scores, alive, 0.3).tolist() == [False, True, False, False]  # round(0.9)=1, tie: earlier
    assert channels_to_prune(scores, alive, 0.5).tolist() == [False, True, False, True]  # round(1.5)=2
    assert channels_to_prune(scores, alive, 0.99).tolist() == [False, True, False, True]  # one always stays
    assert not channels_to_prune(scores, torch.tensor([False, True, False, False]), 0.99).any()


class ConvBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.out = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.conv(x))))


def test_l1_ranks_channels_by_their_filters_and_bn_gamma_by_the_batchnorm_scale():
    model = ConvBN()
    groups = resolve_prune_groups(model, SPECS, {"conv": 0.25, "fc": 0.2}, ["out"])
    plan = build_channel_plan(model, groups, ["out"], torch.zeros(1, 3, 8, 8))
    (group,) = plan.groups
    assert [s.param for s in group.filters] == ["conv.weight"] and [s.param for s in group.gammas] == ["bn.weight"]
    weights = dict(model.state_dict())
    weights["conv.weight"] = torch.ones(4, 3, 3, 3) * torch.tensor([1.0, 0.1, 2.0, 3.0]).view(4, 1, 1, 1)
    weights["bn.weight"] = torch.tensor([0.5, 2.0, -0.01, 1.0])
    assert torch.allclose(channel_scores(weights, {}, group, score="l1"), torch.tensor([27.0, 2.7, 54.0, 81.0],
                                                                                       dtype=torch.float64))
    mask = ones_mask(model, ["conv.weight"])
    assert rows_alive(prune_channels(weights, mask, plan), "conv.weight").tolist() == [True, False, True, True]
    by_gamma = prune_channels(weights, mask, plan, score="bn_gamma")
    assert rows_alive(by_gamma, "conv.weight").tolist() == [True, True, False, True]
    start = dict(weights, **{"conv.weight": weights["conv.weight"] * 0.5})  # magnitude increase: |w| - |w0|
    assert torch.allclose(channel_scores(weights, {}, group, reference=start), torch.tensor([13.5, 1.35, 27.0, 40.5],
                                                                                           dtype=torch.float64))


def test_output_layers_and_channels_that_are_model_outputs_stay_whole():
    model = ToyNet(6)
    groups = resolve_prune_groups(model, {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}},
                                  {"conv": 0.5, "fc": 0.5}, ["head"])
    neurons = build_channel_plan(model, groups, ["head"], torch.zeros(2, 16), neurons=True)
    assert [g.name for g in neurons.groups] == ["conv", "fc1"]
    assert [r.param for r in neurons.groups[0].readers] == ["fc1.weight"]  # the flattened map's columns
    assert int((neurons.groups[0].readers[0].index >= 0).sum()) == 64
    weights = neurons.weight_groups(groups)
    assert [g.params for g in weights] == [(), ()]  # everything is pruned by channel
    by_weight = build_channel_plan(model, groups, ["head"], torch.zeros(2, 16))
    assert [g.name for g in by_weight.groups] == ["conv"]
    assert [g.params for g in by_weight.weight_groups(groups)] == [(), ("fc1.weight",)]
    # The head itself is no group's: its outputs are the model's.
    only_head = [PruneGroup("fc", 0.5, ("head.weight",))]
    with pytest.raises(ChannelPlanError, match="outputs of the model"):
        build_channel_plan(model, only_head, [], torch.zeros(2, 16), neurons=True)


def test_channel_rounds_prune_linear_layers_by_weight_beside_the_channels():
    model = ToyNet(6)
    groups = resolve_prune_groups(model, {"conv": {"types": ["Conv1d"]}, "fc": {"types": ["Linear"]}},
                                  {"conv": 0.5, "fc": 0.25}, ["head"])
    plan = build_channel_plan(model, groups, ["head"], torch.zeros(2, 16))
    mask = ones_mask(model, [n for g in groups for n in g.params])
    weights = random_weights(model, 5)
    pruned = prune_by_channel(weights, mask, groups, plan)
    check_channel_mask(pruned, plan)
    kept = rows_alive(pruned, "conv.weight")
    assert int(kept.sum()) == 2
    columns = pruned["fc1.weight"].view(32, 4, 16).any(0).any(1)  # fc1 reads the flattened 4×16 map
    assert torch.equal(columns, kept)
    by_weight = magnitude_prune(weights, mask, [groups[1]])["fc1.weight"]  # 25% of fc1 by |w|, then the columns
    assert int(by_weight.sum()) == 2048 - 512
    assert torch.equal(pruned["fc1.weight"], by_weight & kept.repeat_interleave(16)[None, :])
    assert kept_channels(pruned) == {"conv": (2, 4)}


def test_random_prune_of_a_channel_ticket_draws_random_channels_with_the_tickets_counts(resnet18):
    model, groups, plan = resnet18
    ones = ones_mask(model, [n for g in groups for n in g.params])
    ticket = prune_channels(random_weights(model, 6), ones, plan)
    control = make_control("random_prune", ticket, {}, seed=1, draw_init=dict, channels=plan).mask
    check_channel_mask(control, plan)
    assert [int(k.sum()) for k in plan.keeps(control)] == [int(k.sum()) for k in plan.keeps(ticket)]
    assert all(int(control[n].sum()) == int(ticket[n].sum()) for n in ticket)
    assert any(not torch.equal(control[n], ticket[n]) for n in ticket)
    again = random_channel_mask(ticket, plan, seed=1)
    assert all(torch.equal(again[n], control[n]) for n in ticket)  # seeded


def test_channel_granularity_needs_example_inputs_and_neurons_need_channels():
    class Untraceable(ToyTask):
        example_inputs = None

    with pytest.raises(ConfigError, match="Untraceable task gives no example inputs"):
        channel_plan(Untraceable(), [], ["head"], 6)
    with pytest.raises(ConfigError, match=r"prune\.fc_granularity: neuron prunes channel tickets"):
        from_dict(PruneConfig, {"fc_granularity": "neuron"}, prefix="prune")
    assert to_dict(PruneConfig())["granularity"] == "weight"


def run_loop(out: Path, prune: PruneConfig):
    config = {"seed": 3, "prune": to_dict(prune), "split": to_dict(SplitConfig())}
    return run_toy(prepare_run_dir(out, config, resume=False, overwrite=False), prune, epochs=2)


def mask_digest(mask: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(mask):
        h.update(name.encode())
        h.update(mask[name].to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.usefixtures("one_thread")
def test_weight_granularity_gives_the_masks_it_gave_before_channel_tickets(tmp_path):
    # The digests of these tickets with the code before channel tickets existed (be46293), on the CPU.
    prune = PruneConfig(method="colt", partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.6,
                        max_rounds=3, evaluate="none")
    assert prune.granularity == "weight"
    result = run_loop(tmp_path / "colt", prune)
    assert mask_digest(result.ticket.mask) == "37686ed2a8dd83ce"
    assert "granularity" not in result.ticket.meta


@pytest.mark.usefixtures("one_thread")
def test_a_toy_channel_run_prunes_whole_channels_and_its_report_counts_them(tmp_path):
    prune = PruneConfig(method="colt", partitions=2, rates={"conv": 0.3, "fc": 0.3}, target_sparsity=0.75,
                        max_rounds=4, evaluate="final", controls=["random_prune"], granularity="channel")
    result = run_loop(tmp_path / "run", prune)
    mask = result.ticket.mask
    assert result.ticket.meta["granularity"] == "channel" and result.ticket.meta["fc_granularity"] == "weight"
    conv = rows_alive(mask, "conv.weight")
    assert 0 < int(conv.sum()) < 4 and torch.equal(mask["fc1.weight"].view(32, 4, 16).any(0).any(1), conv)
    control = torch.load(tmp_path / "run" / f"round_{result.rounds[-1].round:02d}" / "controls" / "random_prune" /
                         "mask.pt", weights_only=True)
    assert int(rows_alive(control, "conv.weight").sum()) == int(conv.sum())
    write_report(result.run_dir, read_summary(result.run_dir), ToyTask().class_names,
                 ReportStyle(title="toy", per_class_title="Per-class accuracy", per_class_name="accuracy"))
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"| conv | {int(conv.sum())} | 4 |" in report and "## Kept channels" in report


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(TOY_RUN), "--out", str(out), "--granularity", "channel",
                             "--controls", "random_prune", "--evaluate", "final", "--epochs", "2", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def channel_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("channel_ref") / "run"
    reference = _start(out)
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()
    return out


@pytest.mark.parametrize("kill_after", ["round_01/partition_0/train_state.pt", "round_02/mask.pt"])
def test_a_killed_channel_run_resumes_to_the_same_ticket(tmp_path, channel_reference, kill_after):
    proc = _start(tmp_path / "killed", "--sleep", "0.05")
    deadline = time.time() + 240
    while not (tmp_path / "killed" / kill_after).exists():
        assert proc.poll() is None, "run ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "ticket.pt").exists()
    resumed = _start(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    ref = torch.load(channel_reference / "ticket.pt", weights_only=True)
    got = torch.load(tmp_path / "killed" / "ticket.pt", weights_only=True)
    assert ref["meta"]["granularity"] == got["meta"]["granularity"] == "channel"
    for part in ("mask", "init"):
        assert ref[part].keys() == got[part].keys()
        assert all(torch.equal(ref[part][k], got[part][k]) for k in ref[part])
    control = "round_02/controls/random_prune/mask.pt"
    a, b = (torch.load(d / control, weights_only=True) for d in (channel_reference, tmp_path / "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
