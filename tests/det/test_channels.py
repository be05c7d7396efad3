"""Channel tickets of detectors: Faster R-CNN traced through its backbone, RPN head and box head, the features
the RPN conv and fc6 read coupled to the last backbone convs, the fixed heads whole; a channel COLT-2 run of
voc_synth_tiny end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from colt_core.prune.channels import build_channel_plan, check_channel_mask, prune_channels
from colt_core.prune.magnitude import resolve_prune_groups
from colt_core.prune.masks import ones_mask
from colt_core.prune.ticket import load_ticket
from colt_det import detectors
from colt_det.model import build_vgg16_faster_rcnn
from colt_det.task import trace_faster_rcnn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train_colt_det  # noqa: E402

# voc_synth_tiny shrunk to seconds (as the detection run tests do), as channel COLT-2 with a random_prune control.
TINY_CHANNEL_RUN = [
    "data.synthetic.n_trainval=24", "data.synthetic.n_test=8", "data.synthetic.image_size=64",
    "data.val_fraction=0.25", "model.width=0.0625", "model.head_dim=16", "model.kwargs.min_size=64",
    "model.kwargs.max_size=64", "augment.size=64", "train.epochs=1", "train.batch_size=4", "train.progress=false",
    "prune.max_rounds=2", "prune.target_sparsity=0.95", "prune.evaluate=final", "prune.granularity=channel",
    "prune.rates.conv=0.2",  # 4 channels in the first convs: two partitions at 0.45 can keep disjoint ones
    "prune.controls=[random_prune]",
]


def detector_plan(model: torch.nn.Module, fam: detectors.DetectorFamily, *, neurons: bool = False, side: int = 64):
    outputs = fam.class_output_layers(model)
    groups = resolve_prune_groups(model, detectors.prune_group_specs(model, fam), {"conv": 0.5, "fc": 0.5}, outputs)
    plan = build_channel_plan(model, groups, outputs, torch.zeros(1, 3, side, side), trace_faster_rcnn,
                              neurons=neurons)
    return groups, plan


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return build_vgg16_faster_rcnn(21, width=0.0625, norm="batch", roi_pool="pool", head_dim=16, head_dropout=0.0,
                                   anchor_sizes=((16, 32, 64),), min_size=64, max_size=64)


def test_vgg16_last_features_are_one_group_read_by_the_rpn_conv_and_fc6(vgg16):
    groups, plan = detector_plan(vgg16, detectors.VGG16, neurons=True)
    by_name = {g.name: g for g in plan.groups}
    last = by_name["backbone.body.40"]  # conv5_3
    assert {(r.param, r.dim) for r in last.readers} == {("rpn.head.conv.0.0.weight", 1),
                                                        ("roi_heads.box_head.fc6.weight", 1)}
    whole = dict(plan.whole)
    assert "not pruned" in whole["rpn.head.conv.0.0"]  # read by the RPN's fixed outputs
    assert "outputs of the model" in whole["roi_heads.box_head.fc7"]  # feeds the box predictor
    assert not any(g.name.startswith("roi_heads.box_predictor") or g.name.startswith("rpn.head") for g in plan.groups)
    assert [r.param for r in by_name["roi_heads.box_head.fc6"].readers] == ["roi_heads.box_head.fc7.weight"]

    mask = ones_mask(vgg16, [n for g in groups for n in g.params])
    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=gen) for k, v in vgg16.state_dict().items() if v.is_floating_point()}
    pruned = prune_channels(weights, mask, plan)
    check_channel_mask(pruned, plan)
    kept = pruned["backbone.body.40.weight"].flatten(1).any(1)
    assert int(kept.sum()) == kept.numel() // 2
    assert torch.equal(pruned["rpn.head.conv.0.0.weight"].any(0).flatten(1).any(1), kept)
    assert pruned["rpn.head.conv.0.0.weight"].flatten(1).any(1).all()  # its own filters stay
    fc6 = pruned["roi_heads.box_head.fc6.weight"]
    assert torch.equal(fc6.any(0), kept.repeat_interleave(49))  # the flattened 7×7 pooled map of each channel
    assert torch.equal(pruned["roi_heads.box_head.fc7.weight"].any(0), fc6.any(1))
    assert pruned["roi_heads.box_head.fc7.weight"].any(1).all()
    assert "roi_heads.box_predictor.cls_score.weight" not in pruned


def test_fpn_laterals_and_the_rpn_conv_share_one_channel_set():
    torch.manual_seed(0)
    model = detectors.build("fasterrcnn_mobilenet_v3_large_fpn", 5)
    groups, plan = detector_plan(model, detectors.family("fasterrcnn_mobilenet_v3_large_fpn"), side=128)
    by_name = {g.name: g for g in plan.groups}
    outputs = by_name["backbone.fpn.layer_blocks.0.0"]
    assert [f.param for f in outputs.filters] == ["backbone.fpn.layer_blocks.0.0.weight",
                                                  "backbone.fpn.layer_blocks.1.0.weight"]
    assert {r.param for r in outputs.readers} == {"rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight"}
    laterals = by_name["backbone.fpn.inner_blocks.0.0"]  # added to each other by the top-down pathway
    assert [f.param for f in laterals.filters] == ["backbone.fpn.inner_blocks.0.0.weight",
                                                   "backbone.fpn.inner_blocks.1.0.weight"]
    mask = prune_channels(dict(model.state_dict()), ones_mask(model, [n for g in groups for n in g.params]), plan)
    check_channel_mask(mask, plan)
    assert torch.equal(mask["backbone.fpn.layer_blocks.0.0.weight"].flatten(1).any(1),
                       mask["backbone.fpn.layer_blocks.1.0.weight"].flatten(1).any(1))


def test_a_channel_colt2_run_of_voc_synth_tiny_reports_its_channels(tmp_path):
    torch.set_num_threads(1)
    args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp_path / 'voc'}"]
    for item in TINY_CHANNEL_RUN:
        args += ["--set", item]
    result = CliRunner().invoke(train_colt_det.main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    ticket = load_ticket(run / "ticket.pt")
    assert ticket.meta["granularity"] == "channel"
    last = ticket.mask["backbone.body.40.weight"].flatten(1).any(1)
    assert 0 < int(last.sum()) < last.numel()
    assert torch.equal(ticket.mask["roi_heads.box_head.fc6.weight"].any(0).view(-1, 49).any(1), last)
    for name, m in ticket.mask.items():
        if m.dim() == 4:  # whole filters: a row is all on or all off where its inputs live
            rows, cols = m.flatten(2).any(2).any(1), m.flatten(2).any(2).any(0)
            assert torch.equal(m.flatten(2).any(2), rows[:, None] & cols[None, :]), name
    report = (run / "report.md").read_text()
    section = report.split("## Kept channels", 1)[1]
    assert f"| backbone.body.40 | {int(last.sum())} | {last.numel()} |" in section
    rpn = ticket.mask["rpn.head.conv.0.0.weight"].shape[0]
    assert f"| rpn.head.conv.0.0 | {rpn} | {rpn} |" in section  # read by the RPN's fixed outputs: whole
    final = run / f"round_{ticket.meta['rounds']:02d}"
    control = torch.load(final / "controls" / "random_prune" / "mask.pt", weights_only=True)
    assert int(control["backbone.body.40.weight"].flatten(1).any(1).sum()) == int(last.sum())
