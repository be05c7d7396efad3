"""Every supported torchvision detector family: built by torchvision's builder, its outputs found by walking the
model, trained a step under a mask, pruned a round, exported into files torchvision's own models load."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from colt_core.export import export_run
from colt_core.io import atomic_save, atomic_write_text
from colt_core.prune.magnitude import magnitude_prune, prune_count, resolve_prune_groups
from colt_core.prune.masks import MaskKeeper
from colt_core.prune.weights import snapshot
from colt_core.settings import ScheduleConfig
from colt_core.train.optim import build_lr_scheduler
from colt_core.train.trainer import train_one_epoch
from colt_det.config import DetRunConfig, ModelConfig
from colt_det.detectors import FAMILIES, build, coco_weights, default_backbone_weights, family, prune_group_specs
from colt_det.export import detection_export_target
from colt_det.pretrained import cache_file
from colt_det.task import detector_loss

pytestmark = pytest.mark.usefixtures("one_thread")

RATES = {"conv": 0.3, "fc": 0.2}
# Small inputs keep CPU steps short; they change no parameter shape.
SMALL = {name: ({"size": 96} if name.startswith("ssd") else {"min_size": 96, "max_size": 96}) for name in FAMILIES}
OUTPUT_LEAVES = ("cls_logits", "bbox_pred", "bbox_reg", "bbox_ctrness", "cls_score")


def built(name: str, num_classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    kwargs = dict(SMALL[name])
    if "size" in kwargs:  # SSD resizes to a fixed square: give it through its transform's size
        kwargs = {}
    return build(name, num_classes, kwargs=kwargs)


def groups_of(model: nn.Module, name: str, **kwargs):
    fam = family(name)
    return resolve_prune_groups(model, prune_group_specs(model, fam), RATES, fam.class_output_layers(model), **kwargs)


def images_and_targets(n: int = 2, size: int = 96):
    images, targets = [], []
    for i in range(n):
        image = torch.full((3, size, size), 0.1)
        image[i % 3, 20:70, 15 + 5 * i:60 + 5 * i] = 0.9
        images.append(image)
        targets.append({"boxes": torch.tensor([[15.0 + 5 * i, 20.0, 60.0 + 5 * i, 70.0]]),
                        "labels": torch.tensor([1 + i % 4])})
    return images, targets


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_family_lists_exactly_the_models_output_layers(name):
    fam, model, other = family(name), built(name, 5), built(name, 9)
    # Class outputs: exactly the layers whose shapes follow the number of classes.
    shapes, other_shapes = model.state_dict(), other.state_dict()
    grows = sorted({k.rsplit(".", 1)[0] for k in shapes if shapes[k].shape != other_shapes[k].shape})
    assert sorted(n for layer in fam.class_output_layers(model) for n in _weighted(model, layer)) == grows
    fixed = fam.fixed_output_layers(model)
    assert fixed and all(n.split(".")[-1] in OUTPUT_LEAVES or "module_list" in n for n in fixed)
    groups = {g.name: set(g.params) for g in groups_of(model, name)}
    modules = dict(model.named_modules())
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        weight = f"{module_name}.weight"
        is_output = any(module_name == o or module_name.startswith(o + ".") for o in fam.class_output_layers(model))
        places = [is_output, module_name in fixed, weight in groups["conv"], weight in groups["fc"]]
        assert sum(places) == 1, (module_name, places)  # every conv and linear has exactly one place
        if weight in groups["conv"]:
            assert isinstance(module, nn.Conv2d)
    selected = groups["conv"] | groups["fc"]
    assert not any(n.endswith(".bias") for n in selected)
    assert not any(isinstance(modules[n.rsplit(".", 1)[0]], nn.modules.batchnorm._NormBase | nn.GroupNorm)
                   for n in selected)


def _weighted(model: nn.Module, layer: str) -> list[str]:
    return [n for n, m in model.named_modules() if (n == layer or n.startswith(layer + ".")) and
            any(True for _ in m.parameters(recurse=False))]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_trains_under_a_mask_predicts_prunes_and_exports(name, tmp_path):
    model = built(name)
    groups = groups_of(model, name)
    names = [n for g in groups for n in g.params]
    gen = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    mask = {n: torch.rand(params[n].shape, generator=gen) > 0.5 for n in names}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    keeper = MaskKeeper(model, mask, optimizer)
    loader = DataLoader([images_and_targets()[0][i:i + 1] + images_and_targets()[1][i:i + 1] for i in range(2)],
                        batch_size=2, collate_fn=lambda batch: ([b[0] for b in batch], [b[1] for b in batch]))
    scheduler = build_lr_scheduler(optimizer, ScheduleConfig(name="constant"), epochs=1, iters_per_epoch=1)
    task = type("Task", (), {"loss": staticmethod(detector_loss)})
    stats = train_one_epoch(model, task, loader, optimizer, device=torch.device("cpu"), scheduler=scheduler,
                            keeper=keeper)
    assert stats["loss"] > 0 and torch.isfinite(torch.tensor(stats["loss"]))
    for n, keep in mask.items():
        assert torch.count_nonzero(params[n][~keep]) == 0, n
        state = optimizer.state[params[n]]
        assert all(torch.count_nonzero(state[k][~keep]) == 0 for k in ("exp_avg", "exp_avg_sq")), n
    model.eval()
    with torch.no_grad():
        out = model(images_and_targets()[0][:1])[0]
    assert set(out) >= {"boxes", "labels", "scores"} and out["boxes"].shape[1:] == (4,)

    pruned = magnitude_prune(snapshot(model), mask, groups)  # one round: exact counts per group
    for g in groups:
        alive = sum(int(mask[n].sum()) for n in g.params)
        assert alive - sum(int(pruned[n].sum()) for n in g.params) == prune_count(g.rate, alive)

    # Export from a run directory written by hand: the whole detector loads into the torchvision builder.
    cfg = DetRunConfig(model=ModelConfig(arch=name, kwargs={k: v for k, v in SMALL[name].items() if k != "size"}))
    architecture = cfg.model.architecture(5)
    run = tmp_path / "run"
    atomic_write_text("seed: 0\n", run / "config.yaml")
    atomic_save(snapshot(built(name)), run / "init.pt")
    atomic_save(pruned, run / "round_00" / "mask.pt")
    result = export_run(run, tmp_path / "out", detection_export_target, round=0, architecture=architecture)
    plain = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5,
                                         **architecture["kwargs"])
    detector = result.files["detector" if "detector" in result.files else "dense"]
    plain.load_state_dict(torch.load(detector, weights_only=True))  # strict
    for n, keep in pruned.items():
        assert torch.count_nonzero(plain.state_dict()[n][~keep]) == 0
    fam = family(name)
    if fam.backbone is not None:
        target = torchvision.models.get_model(fam.backbone, weights=None)
        if fam.backbone_part:
            target = getattr(target, fam.backbone_part)
        missing = target.load_state_dict(torch.load(result.files["dense"], weights_only=True), strict=False)
        assert not missing.unexpected_keys
        assert all(k.startswith(("fc.", "classifier.")) or name == "ssd300_vgg16" for k in missing.missing_keys)


def _cache(weights, model: nn.Module) -> None:
    path = cache_file(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def test_frozen_backbone_layers_and_frozen_norms_are_never_pruned_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    weights = default_backbone_weights(name)
    _cache(weights, torchvision.models.mobilenet_v3_large())
    torch.manual_seed(0)
    model = build(name, 5, weights_backbone=weights, kwargs={"trainable_backbone_layers": 2})
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and any(isinstance(m, torchvision.ops.FrozenBatchNorm2d) for m in model.modules())
    selected = {n for g in groups_of(model, name) for n in g.params}
    assert selected and not selected & frozen
    everything = {n for g in groups_of(model, name, include_frozen=True) for n in g.params}
    assert frozen & {n for n in everything if n.endswith(".weight")} and everything > selected
    # The export rebuilds the detector from scratch: its norm layers count batches, the frozen ones did not.
    target = detection_export_target({**ModelConfig(arch=name, kwargs={"trainable_backbone_layers": 2})
                                      .architecture(5)})
    state = target.complete(snapshot(model))
    target.model.load_state_dict(state)  # strict, thanks to the added batch counters


def test_a_coco_trained_detector_gets_fresh_class_outputs_for_the_datas_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name = "ssdlite320_mobilenet_v3_large"
    weights = coco_weights(name)
    torch.manual_seed(3)
    coco = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    _cache(weights, coco)
    torch.manual_seed(0)
    model = build(name, 6, coco=weights)
    fam = family(name)
    outputs = fam.class_output_layers(model)
    state, trained = model.state_dict(), coco.state_dict()
    for key, value in state.items():
        if any(key.startswith(o + ".") for o in outputs):
            assert value.shape[0] == trained[key].shape[0] // 91 * 6  # fresh, for 6 classes
        else:
            assert torch.equal(value, trained[key]), key  # everything else is the COCO detector's
    assert model.head.classification_head.num_columns == 6
    model.eval()
    with torch.no_grad():
        labels = model([torch.rand(3, 320, 320)])[0]["labels"]
    assert labels.numel() == 0 or int(labels.max()) < 6
