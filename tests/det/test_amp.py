"""Every `train.amp` value with every RoI pooling of Faster R-CNN VGG16, and a torchvision detector, on the CPU
(and on a GPU when there is one): a couple of training steps with a finite loss, a validation loss and
detections; fp16 on the CPU is refused with one line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision.ops import roi_pool

from colt_core.config import ConfigError
from colt_core.prune.masks import MaskKeeper
from colt_core.settings import TrainConfig
from colt_core.train.epoch import train_one_epoch, validate
from colt_core.train.trainer import Trainer
from colt_det.detectors import build as build_detector
from colt_det.model import SingleLevelRoIPool, build_vgg16_faster_rcnn
from colt_det.predict import predict
from colt_det.task import detector_loss

AMP_VALUES = ("auto", "bf16", "fp16", "off", True, False)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIDE = 64
# What each value means on each device: the autocast dtype, or None for full precision.
EXPECTED = {
    "cpu": {"auto": None, "bf16": torch.bfloat16, "off": None, True: None, False: None},
    "cuda": {"auto": torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16,
             "bf16": torch.bfloat16, "fp16": torch.float16, "off": None, True: "auto", False: None},
}


def _batches(n: int = 2) -> list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """`n` batches of two random images, each with two boxes of classes 1 and 2."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]])
    return [([torch.rand(3, SIDE, SIDE, generator=gen) for _ in range(2)],
             [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2])} for _ in range(2)]) for _ in range(n)]


def _tiny_vgg16(roi_pool_kind: str) -> nn.Module:
    torch.manual_seed(0)
    return build_vgg16_faster_rcnn(3, width=0.0625, head_dim=16, head_dropout=0.0, norm="batch",
                                   roi_pool=roi_pool_kind, anchor_sizes=((16, 32),), min_size=SIDE, max_size=SIDE,
                                   rpn_batch_size_per_image=16, box_batch_size_per_image=16,
                                   rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
                                   rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)


def _trainer(amp: str | bool, device: str) -> Trainer:
    """The engine's trainer for `train.amp` on `device`: where the precision of training and evaluation is chosen."""
    task = SimpleNamespace(loss=detector_loss, fixed_input_size=False)
    return Trainer(task, TrainConfig(amp=amp, device=device), eval_batch_size=2)  # type: ignore[arg-type]


def _train_validate_predict(model: nn.Module, trainer: Trainer) -> tuple[dict[str, float], dict[str, float], list]:
    """Two optimizer steps as the engine takes them, a validation loss and detections, all under `trainer.amp`."""
    device, precision = trainer.device, trainer.amp
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batches = _batches()
    trained = train_one_epoch(model, trainer.task, batches, optimizer, device=device, scheduler=scheduler,
                              keeper=MaskKeeper(model, {}, optimizer), precision=precision,
                              scaler=precision.scaler(device))
    val = validate(model, trainer.task, batches[:1], device=device, precision=precision)
    return trained, val, predict(model, batches[:1], device, amp=precision, progress=False)


def _pooled_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Records the dtype of every RoI pooling output of `model` from now on."""
    seen: list[torch.dtype] = []
    model.roi_heads.box_roi_pool.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", AMP_VALUES, ids=str)
@pytest.mark.parametrize("roi_pool_kind", ["align", "pool"])
def test_vgg16_trains_and_detects_under_every_amp_value(roi_pool_kind: str, amp: str | bool, device: str) -> None:
    if device == "cpu" and amp == "fp16":
        with pytest.raises(ConfigError, match=r"train\.amp: fp16 .*GPU.*bf16 or off"):
            _trainer(amp, device)
        return
    trainer = _trainer(amp, device)
    expected = EXPECTED[device][amp]
    expected = EXPECTED[device]["auto"] if expected == "auto" else expected
    assert trainer.amp.dtype == expected
    model = _tiny_vgg16(roi_pool_kind)
    pooled = _pooled_dtypes(model)
    trained, val, detections = _train_validate_predict(model, trainer)
    assert math.isfinite(trained["loss"]) and trained["loss"] > 0
    assert math.isfinite(val["loss"]) and set(val) == set(trained)
    # RoI pooling ran under the chosen precision: its output has the autocast dtype (float32 without one).
    assert pooled and set(pooled) == {expected or torch.float32}
    assert [image_id for image_id, _ in detections] == [0, 1]
    for _, out in detections:
        assert out["boxes"].dtype == torch.float32 and out["boxes"].device.type == "cpu"
        assert torch.isfinite(out["boxes"]).all() and bool(((out["boxes"] >= 0) & (out["boxes"] <= SIDE)).all())
    assert all(p.isfinite().all() for p in model.parameters())


def test_roi_pool_under_cpu_autocast_is_float32_pooling_of_the_same_features() -> None:
    """RoIPool has no bfloat16 CPU kernel; under autocast it pools the features in float32 and hands back their
    dtype, so max pooling picks exactly the bfloat16 values full-precision pooling of them would."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 8, 8, generator=gen).bfloat16()
    proposals = [torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 8.0, 120.0, 100.0]]),
                 torch.tensor([[8.0, 8.0, 40.0, 90.0]])]
    pool = SingleLevelRoIPool()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = pool({"0": features}, proposals, [(128, 128)] * 2)
    assert pooled.dtype == torch.bfloat16 and pooled.shape == (3, 4, 7, 7)
    assert torch.equal(pooled, roi_pool(features.float(), proposals, (7, 7), 1 / 16).bfloat16())
    full = pool({"0": features.float()}, proposals, [(128, 128)] * 2)  # no autocast: as it always was
    assert full.dtype == torch.float32 and torch.equal(full, pooled.float())


@pytest.mark.parametrize("device", DEVICES)
def test_torchvision_detector_trains_and_detects_in_bf16(device: str) -> None:
    torch.manual_seed(0)
    model = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 3,
                           kwargs={"min_size": SIDE, "max_size": SIDE, "rpn_pre_nms_top_n_train": 50,
                                   "rpn_post_nms_top_n_train": 20, "rpn_pre_nms_top_n_test": 50,
                                   "rpn_post_nms_top_n_test": 20, "box_batch_size_per_image": 16})
    trainer = _trainer("bf16", device)
    assert trainer.amp.dtype == torch.bfloat16
    pooled = _pooled_dtypes(model)
    trained, val, detections = _train_validate_predict(model, trainer)
    assert math.isfinite(trained["loss"]) and math.isfinite(val["loss"])
    assert pooled and set(pooled) == {torch.bfloat16}  # torchvision's RoIAlign: float32 inside, bfloat16 out
    assert len(detections) == 2
    assert all(out["boxes"].dtype == torch.float32 and torch.isfinite(out["boxes"]).all() for _, out in detections)
