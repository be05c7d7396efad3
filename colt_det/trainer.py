"""The detection front end's `Trainer`: Faster R-CNN VGG16 on VOC partitions, trained under a mask.

The engine asks for models and trainings; this module turns each request into datasets, loaders,
an optimizer and the plain loops of `colt_det.engine`, and evaluates tickets with per-class VOC AP.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from colt_core.distributed import (
    DistContext,
    all_reduce_sums,
    distributed_sampler,
    run_on_main,
    set_sampler_epoch,
    shard_for_evaluation,
    wrap_ddp,
)
from colt_core.io import atomic_write_json
from colt_core.masks import MaskKeeper
from colt_core.optim import build_lr_scheduler, build_optimizer
from colt_core.partition import non_iid_keep
from colt_core.rounds import TrainJob, TrainOutput
from colt_core.runtime import derive_seed, pick_device, use_amp
from colt_core.training import LateRewind, fit
from colt_det.coco_eval import evaluate_coco
from colt_det.config import DetRunConfig
from colt_det.engine import evaluate_loss, predict, train_one_epoch
from colt_det.model import DETECTOR_OUTPUT_LAYERS, build_vgg16_faster_rcnn, prune_group_specs
from colt_det.synthetic import ensure_synthetic_voc
from colt_det.transforms import build_transforms
from colt_det.voc import VOC_CLASSES, VOCDetectionDataset, VOCRecord, collate_detection, load_voc_records
from colt_det.voc_eval import Detection, detections_from_outputs, evaluate_voc, write_results_files

log = logging.getLogger(__name__)


def split_train_val(records: list[VOCRecord], val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded image-level hold-out of the training images for model selection (never the test set)."""
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = max(1, round(val_fraction * len(records)))
    val_idx = set(order[:n_val].tolist())
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def detect(model: nn.Module, records: list[VOCRecord], *, size: int, device: torch.device, amp: bool = False,
           batch_size: int = 4, num_workers: int = 0, progress: bool = True) -> dict[str, list[Detection]]:
    """Run a 21-way detector over VOC records; detections per class in VOC file coordinates."""
    dataset = VOCDetectionDataset(records, build_transforms(False, size), keep_difficult=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    results = predict(model.to(device), loader, device, amp=amp, progress=progress)
    image_ids = [dataset.image_ids[int(i)] for i, _ in results]
    return detections_from_outputs(image_ids, [out for _, out in results], dataset.label_names)


class DetectionTrainer:
    """Trains and evaluates VGG16 Faster R-CNN detectors for the engine's round loop."""

    output_layers = DETECTOR_OUTPUT_LAYERS

    def __init__(self, cfg: DetRunConfig, run_dir: str | Path | None = None, dist: DistContext | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.class_names = VOC_CLASSES
        self.default_prune_groups = prune_group_specs()
        self.device = pick_device(cfg.train.device)
        self.amp = use_amp(self.device, cfg.train.amp)
        if cfg.data.synthetic is not None:
            # Rank 0 writes the synthetic data; the other ranks read it once it is complete.
            run_on_main(dist, ensure_synthetic_voc, cfg.data.root, **asdict(cfg.data.synthetic))
        records, bad = load_voc_records(cfg.data.root, cfg.data.train_sets,
                                        on_bad_annotation=cfg.data.on_bad_annotation)
        self.bad_annotations = bad
        self.train_records, self.val_records = split_train_val(records, cfg.data.val_fraction,
                                                               derive_seed(cfg.seed, "val-split"))
        self.test_records, _ = load_voc_records(cfg.data.root, cfg.data.test_sets,
                                                on_bad_annotation=cfg.data.on_bad_annotation)
        aug = cfg.augment
        self.train_transform = build_transforms(True, aug.size, hflip_p=aug.hflip, jitter=aug.jitter)
        self.eval_transform = build_transforms(False, aug.size)

    # ----- the Trainer protocol ----------------------------------------------------------------
    def build_model(self, num_outputs: int) -> nn.Module:
        """A detector for `num_outputs` object classes (+1 background output)."""
        return build_vgg16_faster_rcnn(num_outputs + 1, **self.cfg.model.build_kwargs())

    def architecture(self) -> dict[str, Any]:
        return self.cfg.model.architecture()

    def datasets(self, class_ids: list[int] | None, job: TrainJob | None = None) -> tuple[VOCDetectionDataset, ...]:
        """Training and validation datasets of one partition (all classes when `class_ids` is None)."""
        train_records = self.train_records
        if job is not None and job.non_iid_max_drop:
            # Non-IID: each class loses its own random share of the images whose first object it labels.
            first = [r.objects[0].label if r.objects else -1 for r in train_records]
            keep = non_iid_keep(first, job.data_seed, job.non_iid_max_drop)
            train_records = [train_records[i] for i in keep]
        keep_difficult = self.cfg.data.keep_difficult
        train = VOCDetectionDataset(train_records, self.train_transform, keep_difficult, class_ids)
        val = VOCDetectionDataset(self.val_records, self.eval_transform, keep_difficult, class_ids)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"partition with classes {class_ids} has {len(train)} training and {len(val)} "
                             "validation images; use more data or fewer partitions")
        return train, val

    def _loader(self, dataset: Any, shuffle: bool, batch_size: int, sampler: Any = None) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          collate_fn=collate_detection, num_workers=workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda")

    def train(self, job: TrainJob) -> TrainOutput:
        """Train `job.model` on the job's partition under its mask; keep the lowest-validation-loss weights."""
        cfg = self.cfg.train
        ctx = job.dist  # several ranks: each trains on its share of the images (batch_size per rank)
        writes = ctx is None or ctx.is_group_main
        train_ds, val_ds = self.datasets(job.class_ids, job)
        data_summary = {"train": train_ds.summary(), "val": val_ds.summary()}
        if writes:
            atomic_write_json(data_summary, job.workdir / "data.json")
        log.info("%s: %d training images, %d objects (validation: %d images)", job.tag, train_ds.num_images,
                 train_ds.num_objects, val_ds.num_images)
        sampler = distributed_sampler(train_ds, ctx, shuffle=True, seed=derive_seed(job.seed, "sampler"))
        train_loader = self._loader(train_ds, True, cfg.batch_size, sampler)
        val_loader = self._loader(shard_for_evaluation(val_ds, ctx), False, self.cfg.eval.batch_size)
        model = job.model.to(self.device)
        optimizer = build_optimizer(model, cfg.optimizer)
        scheduler = build_lr_scheduler(optimizer, cfg.schedule, epochs=cfg.epochs, iters_per_epoch=len(train_loader))
        late = LateRewind(model, scheduler, job.rewind_iteration, total_steps=cfg.epochs * len(train_loader),
                          tag=job.tag)
        keeper = MaskKeeper(model, job.mask, optimizer)  # masks name the parameters of the unwrapped model
        net = wrap_ddp(model, ctx)
        scaler = torch.amp.GradScaler("cuda") if self.amp else None
        writer = self._writer(job) if writes else None

        def after_step() -> None:
            keeper.after_step()
            late.after_step()

        def log_step(values: dict[str, Any]) -> None:
            if writer is not None:
                for key, value in values.items():
                    if isinstance(value, (int, float)):
                        # Called after the scheduler's step: last_epoch counts the optimizer steps taken.
                        writer.add_scalar(f"train/{key}", value, scheduler.last_epoch)

        def train_epoch(epoch: int) -> dict[str, float]:
            set_sampler_epoch(train_loader, epoch)
            return train_one_epoch(net, optimizer, train_loader, self.device, scaler=scaler,
                                   before_step=keeper.before_step, after_step=after_step,
                                   lr_scheduler_per_iter=scheduler, grad_clip=cfg.grad_clip,
                                   progress=cfg.progress, epoch=epoch, log_fn=log_step)

        def val_loss() -> float:
            mean = evaluate_loss(model, val_loader, self.device, seed=derive_seed(job.seed, "val"))
            if ctx is None or not ctx.data_parallel:
                return mean
            # Each rank holds a shard: the mean over all validation images, the same on every rank.
            images = len(val_loader.dataset)
            total, count = all_reduce_sums([mean * images, images], ctx)
            return total / count

        def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
            log.info("%s epoch %d/%d: %s", job.tag, epoch + 1, cfg.epochs,
                     ", ".join(f"{k} {v:.4f}" for k, v in stats.items() if isinstance(v, float)))
            if writer is not None:
                for key, value in stats.items():
                    writer.add_scalar(f"epoch/{key}", value, epoch)
                writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch)
                writer.flush()

        checkpoint = job.workdir / "train_state.pt"
        result = fit(model, epochs=cfg.epochs, train_epoch=train_epoch, val_loss=val_loss, optimizer=optimizer,
                     seed=job.seed, scheduler=scheduler, scheduler_interval="step", scaler=scaler, keeper=keeper,
                     checkpoint_path=checkpoint, on_epoch_end=on_epoch_end, rewind_state=lambda: late.state,
                     dist=ctx)
        if writes:
            checkpoint.unlink(missing_ok=True)
        if writer is not None:
            writer.close()
        metrics = {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                   "history": result.history, "data": data_summary}
        return TrainOutput(result.best_state, metrics, result.rewind_state)

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Per-class AP of a full-data detector on the test set (VOC07, VOC12 and COCO-style)."""
        detections = detect(model, self.test_records, size=self.cfg.augment.size, device=self.device, amp=self.amp,
                            batch_size=self.cfg.eval.batch_size, num_workers=self.cfg.data.num_workers,
                            progress=self.cfg.train.progress)
        write_results_files(job.workdir / "results", detections)
        scores = {"voc07": evaluate_voc(detections, self.test_records, use_07_metric=True),
                  "voc12": evaluate_voc(detections, self.test_records, use_07_metric=False)}
        if self.cfg.eval.coco or self.cfg.eval.metric == "coco":
            scores["coco"] = evaluate_coco(detections, self.test_records)
        primary = scores[self.cfg.eval.metric]
        return {"metric": f"{self.cfg.eval.metric} mAP", "value": primary["mAP"], "per_class": primary["per_class"],
                "test_images": len(self.test_records), **scores}

    def _writer(self, job: TrainJob):
        if self.run_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb" / job.tag.replace("/", "_")))
