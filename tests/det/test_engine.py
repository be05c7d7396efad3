"""Detector loops: one training epoch, the validation loss, prediction and box rescaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from colt_core.optim import OptimizerConfig, ScheduleConfig, build_lr_scheduler, build_optimizer
from colt_core.training import fit
from colt_det.engine import evaluate_loss, predict, rescale_boxes, train_one_epoch
from colt_det.model import build_vgg16_faster_rcnn


def tiny_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    options = dict(
        width=0.0625, head_dim=32, min_size=64, max_size=64, anchor_sizes=((16, 32, 64),),
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=64, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=32, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
    )
    options.update(kwargs)
    return build_vgg16_faster_rcnn(3, **options)


class SquareDataset(Dataset):
    """64x64 dark images, each with one bright square: red squares are class 1, green ones class 2."""

    def __init__(self, n: int, seed: int = 0, *, orig_scale: int | None = None,
                 with_ids: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            side = int(rng.integers(18, 30))
            x0, y0 = (int(v) for v in rng.integers(2, 62 - side, size=2))
            image = torch.full((3, 64, 64), 0.1)
            image[i % 2, y0:y0 + side, x0:x0 + side] = 0.9
            target = {"boxes": torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32),
                      "labels": torch.tensor([1 + i % 2])}
            if with_ids:
                target["image_id"] = i
            if orig_scale is not None:
                target["orig_size"] = (64 * orig_scale, 64 * orig_scale)
            self.items.append((image, target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def collate(batch):
    return [image for image, _ in batch], [target for _, target in batch]


def loader(dataset: Dataset, *, shuffle: bool = False, batch_size: int = 2) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator() if shuffle else None)


# --- loops ---

def test_train_one_epoch_learns_and_calls_the_hooks_once_per_step():
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = loader(SquareDataset(4))
    calls: list[str] = []
    losses = []
    for epoch in range(8):
        metrics = train_one_epoch(model, optimizer, data, "cpu", progress=False, epoch=epoch,
                                  before_step=lambda: calls.append("before"),
                                  after_step=lambda: calls.append("after"))
        losses.append(metrics["loss"])
    assert set(metrics) == {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert metrics["loss"] == pytest.approx(sum(v for k, v in metrics.items() if k != "loss"))
    assert calls == ["before", "after"] * (8 * 2)
    assert sum(losses[-2:]) / 2 < 0.6 * losses[0], losses


def test_hooks_see_gradients_before_and_weights_after_the_step():
    model = tiny_model()
    weight = model.backbone.body[0].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}

    def before_step():
        seen["grad"] = weight.grad is not None and bool(weight.grad.abs().sum() > 0)
        with torch.no_grad():
            weight.grad[0].zero_()  # what a mask does: the step leaves filter 0 untouched

    def after_step():
        with torch.no_grad():
            weight[1].zero_()

    start = weight.detach().clone()
    train_one_epoch(model, optimizer, loader(SquareDataset(2)), "cpu", progress=False,
                    before_step=before_step, after_step=after_step)
    assert seen["grad"]
    assert torch.equal(weight[0], start[0])
    assert torch.count_nonzero(weight[1]) == 0
    assert not torch.equal(weight[2], start[2])


def test_non_finite_loss_says_to_lower_the_learning_rate():
    model = tiny_model()
    with torch.no_grad():
        model.roi_heads.box_head.fc6.weight.fill_(float("nan"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train_one_epoch(model, optimizer, loader(SquareDataset(2)), "cpu", progress=False)
    with pytest.raises(ValueError, match="CUDA"):
        train_one_epoch(model, optimizer, loader(SquareDataset(2)), "cpu", progress=False,
                        scaler=torch.amp.GradScaler("cuda", enabled=False))


def test_evaluate_loss_is_deterministic_and_leaves_state_alone():
    model = tiny_model(head_dropout=0.5)
    data = loader(SquareDataset(4))
    model.eval()
    rng_before = torch.get_rng_state()
    first = evaluate_loss(model, data, "cpu")
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert evaluate_loss(model, data, "cpu") == first
    assert not model.training and not model.roi_heads.box_head.drop6.training
    model.train()
    assert evaluate_loss(model, data, "cpu") == first  # dropout is off either way
    assert model.training and model.roi_heads.box_head.drop6.training
    assert evaluate_loss(model, data, "cpu", seed=1) != first  # other RPN/RoI samples
    assert math.isfinite(first) and first > 0


def test_rescale_boxes_maps_and_clips():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 64.0, 64.0]])
    out = rescale_boxes(boxes, (64, 64), (128, 32))
    assert torch.equal(out, torch.tensor([[5.0, 40.0, 15.0, 80.0], [0.0, 0.0, 32.0, 128.0]]))


def test_predict_keeps_order_and_rescales_to_the_original_size():
    model = tiny_model(box_score_thresh=0.0)
    model.train()
    plain = predict(model, loader(SquareDataset(3)), "cpu", progress=False)
    assert model.training
    assert [image_id for image_id, _ in plain] == [0, 1, 2]
    doubled = predict(model, loader(SquareDataset(3, orig_scale=2)), "cpu", progress=False)
    for (_, small), (_, large) in zip(plain, doubled):
        assert set(small) == {"boxes", "labels", "scores"} and small["boxes"].device.type == "cpu"
        assert len(small["boxes"]) > 0
        assert torch.allclose(large["boxes"], small["boxes"] * 2)
        assert torch.equal(large["scores"], small["scores"])
    positions = predict(model, DataLoader(SquareDataset(3, with_ids=False), batch_size=2, collate_fn=collate),
                        "cpu", progress=False)
    assert [image_id for image_id, _ in positions] == [0, 1, 2]


# --- the loops under colt_core's fit, as the detection trainer runs them ---

class Crash(RuntimeError):
    pass


def _fit_detector(checkpoint, *, model_seed: int = 0, crash_after_epoch: int | None = None):
    model = tiny_model(seed=model_seed, head_dropout=0.5)
    train_data, val_data = loader(SquareDataset(4), shuffle=True), loader(SquareDataset(2, seed=1))
    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-3))
    scheduler = build_lr_scheduler(optimizer, ScheduleConfig(warmup_epochs=1), epochs=2,
                                   iters_per_epoch=len(train_data))

    def train_epoch(epoch: int) -> dict[str, float]:
        return train_one_epoch(model, optimizer, train_data, "cpu", lr_scheduler_per_iter=scheduler,
                               progress=False, epoch=epoch)

    def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
        if epoch == crash_after_epoch:
            raise Crash("killed")

    def val_loss() -> float:
        return evaluate_loss(model, val_data, "cpu")

    result = fit(model, epochs=2, train_epoch=train_epoch, val_loss=val_loss, optimizer=optimizer, seed=11,
                 scheduler=scheduler, checkpoint_path=checkpoint, on_epoch_end=on_epoch_end,
                 generators=[train_data.generator])
    return result, model


def test_detector_training_resumed_after_a_crash_ends_bit_identical(tmp_path):
    straight, _ = _fit_detector(tmp_path / "straight.pt")
    with pytest.raises(Crash):
        _fit_detector(tmp_path / "resumed.pt", crash_after_epoch=0)
    # A differently initialised model proves the weights come from the checkpoint.
    resumed, model = _fit_detector(tmp_path / "resumed.pt", model_seed=99)
    assert resumed.history == straight.history and len(straight.history) == 2
    assert (resumed.best_epoch, resumed.best_val_loss) == (straight.best_epoch, straight.best_val_loss)
    for name, value in straight.best_state.items():
        assert torch.equal(resumed.best_state[name], value), name
        assert torch.equal(model.state_dict()[name], value), name
