"""A detector under the engine's loops (training epochs, the validation loss, a resumed training), prediction and
box rescaling."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from colt_core.errors import TrainingDivergedError
from colt_core.prune.masks import MaskKeeper
from colt_core.rundir import TrainingDir
from colt_core.settings import OptimizerConfig, ScheduleConfig, TrainConfig
from colt_core.train.epoch import train_one_epoch, validate
from colt_core.train.optim import build_lr_scheduler
from colt_core.train.task import TrainJob
from colt_core.train.trainer import Trainer
from colt_det.model import build_vgg16_faster_rcnn
from colt_det.predict import predict, rescale_boxes
from colt_det.task import detector_loss

DETECTOR = SimpleNamespace(loss=detector_loss)  # the part of the detection task the loops use
CPU = torch.device("cpu")


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

def _epochs(model, optimizer, data, epochs: int, *, keeper: MaskKeeper | None = None, grad_clip=None):
    scheduler = build_lr_scheduler(optimizer, ScheduleConfig(name="constant"), epochs=epochs,
                                   iters_per_epoch=len(data))
    keeper = keeper or MaskKeeper(model, {}, optimizer)
    return [train_one_epoch(model, DETECTOR, data, optimizer, device=CPU, scheduler=scheduler, keeper=keeper,
                            grad_clip=grad_clip) for _ in range(epochs)]


def test_a_detector_learns_under_the_engines_epoch_with_its_loss_terms_logged():
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = _epochs(model, optimizer, loader(SquareDataset(4)), 8)
    metrics = history[-1]
    assert set(metrics) == {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert metrics["loss"] == pytest.approx(sum(v for k, v in metrics.items() if k != "loss"))
    losses = [h["loss"] for h in history]
    assert sum(losses[-2:]) / 2 < 0.6 * losses[0], losses


def test_pruned_detector_weights_and_their_adam_moments_stay_zero():
    model = tiny_model()
    weight = model.backbone.body[0].weight
    mask = {"backbone.body.0.weight": torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5,
            "roi_heads.box_head.fc6.weight": torch.zeros_like(model.roi_heads.box_head.fc6.weight, dtype=torch.bool)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = weight.detach().clone()
    _epochs(model, optimizer, loader(SquareDataset(2)), 2, keeper=MaskKeeper(model, mask, optimizer), grad_clip=1.0)
    pruned = ~mask["backbone.body.0.weight"]
    assert torch.count_nonzero(weight[pruned]) == 0 and not torch.equal(weight[~pruned], start[~pruned])
    assert torch.count_nonzero(model.roi_heads.box_head.fc6.weight) == 0
    for p, m in ((weight, pruned), (model.roi_heads.box_head.fc6.weight, slice(None))):
        state = optimizer.state[p]
        assert torch.count_nonzero(state["exp_avg"][m]) == 0 and torch.count_nonzero(state["exp_avg_sq"][m]) == 0


def test_non_finite_loss_says_to_lower_the_learning_rate():
    model = tiny_model()
    with torch.no_grad():
        model.roi_heads.box_head.fc6.weight.fill_(float("nan"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDivergedError, match=r"lower train\.optimizer\.lr"):
        _epochs(model, optimizer, loader(SquareDataset(2)), 1)


def test_validation_loss_is_deterministic_and_leaves_state_alone():
    model = tiny_model(head_dropout=0.5)
    data = loader(SquareDataset(4))
    model.eval()
    rng_before = torch.get_rng_state()
    first = validate(model, DETECTOR, data, device=CPU)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert validate(model, DETECTOR, data, device=CPU) == first
    assert not model.training and not model.roi_heads.box_head.drop6.training
    model.train()
    assert validate(model, DETECTOR, data, device=CPU) == first  # dropout is off either way
    assert model.training and model.roi_heads.box_head.drop6.training
    assert validate(model, DETECTOR, data, device=CPU, seed=1)["loss"] != first["loss"]  # other RPN/RoI samples
    assert math.isfinite(first["loss"]) and first["loss"] > 0
    assert first["loss"] == pytest.approx(sum(v for k, v in first.items() if k != "loss"))


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


# --- a detector under the engine's trainer ---

class Crash(RuntimeError):
    pass


class SquareTask:
    """What the trainer needs of the detection task, on squares; its training crashes at `crash_at_step`."""

    class_names = ("red", "green")
    output_layers = ("roi_heads.box_predictor",)
    collate = staticmethod(collate)
    fixed_input_size = True

    def __init__(self, crash_at_step: int | None = None) -> None:
        self.crash_at_step, self.steps = crash_at_step, 0
        self.default_prune_groups: dict = {}

    def datasets(self, class_ids, job):
        return SquareDataset(4), SquareDataset(2, seed=1)

    def loss(self, model, batch):
        if model.training:
            self.steps += 1
            if self.steps == self.crash_at_step:
                raise Crash("killed")
        return detector_loss(model, batch)


def _train_detector(files: TrainingDir, *, model_seed: int = 0, crash_at_step: int | None = None):
    model = tiny_model(seed=model_seed, head_dropout=0.5)
    cfg = TrainConfig(epochs=2, batch_size=2, optimizer=OptimizerConfig(lr=1e-3),
                      schedule=ScheduleConfig(warmup_epochs=1), device="cpu", progress=False)
    job = TrainJob(round=0, partition=None, class_ids=None, model=model, mask={}, seed=11, files=files)
    return Trainer(SquareTask(crash_at_step), cfg, eval_batch_size=2).train(job), model


def test_detector_training_resumed_after_a_crash_ends_bit_identical(tmp_path):
    straight, _ = _train_detector(TrainingDir(tmp_path / "straight"))
    with pytest.raises(Crash):
        _train_detector(TrainingDir(tmp_path / "resumed"), crash_at_step=3)  # in epoch 1, after epoch 0's checkpoint
    # A differently initialised model proves the weights come from the checkpoint.
    resumed, model = _train_detector(TrainingDir(tmp_path / "resumed"), model_seed=99)
    assert resumed.record.history == straight.record.history and len(straight.record.history) == 2
    assert (resumed.record.best_epoch, resumed.record.best_val_loss) == \
        (straight.record.best_epoch, straight.record.best_val_loss)
    assert set(straight.record.val_metrics) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                                                "loss_rpn_box_reg"}
    for name, value in straight.state_dict.items():
        assert torch.equal(resumed.state_dict[name], value), name
        assert torch.equal(model.state_dict()[name], value), name
