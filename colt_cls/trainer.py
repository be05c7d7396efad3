"""The classification front end's `Trainer`: partition datasets, one plain training loop, test accuracy.

The engine asks for models and trainings; this module turns each request into datasets (labels remapped per
partition, validation held out from the training data), loaders, an optimizer and `colt_core.training.fit`,
and evaluates full-data models by top-1/top-5 and per-class test accuracy. `train_ticket` trains an existing
ticket on this trainer's dataset (Morcos et al.'s transfer).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from colt_cls.config import ClsRunConfig
from colt_cls.datasets import (
    ImageClassificationDataset,
    build_transforms,
    load_dataset,
    subset_by_classes,
    train_val_split,
)
from colt_cls.models import create_model, describe_architecture, prune_group_rules
from colt_cls.synthetic import ensure_synthetic
from colt_core.config import ConfigError
from colt_core.distributed import (
    DistContext,
    all_reduce_sums,
    distributed_sampler,
    run_on_main,
    set_sampler_epoch,
    shard_for_evaluation,
    wrap_ddp,
)
from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, read_json
from colt_core.masks import MaskKeeper
from colt_core.optim import build_lr_scheduler, build_optimizer
from colt_core.partition import non_iid_keep
from colt_core.rounds import TrainJob, TrainOutput
from colt_core.runtime import derive_seed, pick_device, seed_everything, use_amp
from colt_core.sparsity import sparsity_report
from colt_core.ticket import TicketError, check_ticket_fits, load_ticket
from colt_core.training import LateRewind, fit
from colt_core.weights import rewind

log = logging.getLogger(__name__)

LOG_EVERY = 20  # optimizer steps between TensorBoard points of the training loss and lr


def _progress(iterable: Any, enabled: bool, desc: str) -> Any:
    return tqdm(iterable, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    keeper: MaskKeeper, scaler: torch.amp.GradScaler | None = None,
                    after_step: Callable[[float], None] | None = None, progress: bool = False,
                    desc: str = "train") -> dict[str, float]:
    """One pass of cross-entropy training under a mask; returns the mean loss and training accuracy.

    Per step: forward -> backward -> (unscale under AMP) -> mask gradients -> optimizer step -> re-mask
    weights -> `after_step(loss)` -> lr scheduler step.
    """
    model.train()
    loss_sum, correct, seen, steps = 0.0, 0, 0, 0
    for images, labels in _progress(loader, progress, desc):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{desc}: training loss is {loss_value} at iteration {steps}; "
                                     "lower train.optimizer.lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            keeper.before_step()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            keeper.before_step()
            optimizer.step()
        keeper.after_step()
        if after_step is not None:
            after_step(loss_value)
        scheduler.step()
        loss_sum += loss_value * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        steps += 1
    if seen == 0:
        raise ValueError("the training data loader yielded no batches; check the dataset and "
                         "train.batch_size")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
                        amp: bool = False, progress: bool = False, desc: str = "eval") -> dict[str, Any]:
    """Mean cross-entropy, top-1 and top-5 accuracy (top-5 only with >= 5 classes), per-class counts."""
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    class_total = torch.zeros(num_classes, dtype=torch.long)
    class_correct = torch.zeros(num_classes, dtype=torch.long)
    for images, labels in _progress(loader, progress, desc):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hit = logits.argmax(1) == labels
        top1 += int(hit.sum())
        if num_classes >= 5:
            top5 += int((logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum())
        class_total += torch.bincount(labels.cpu(), minlength=num_classes)
        class_correct += torch.bincount(labels[hit].cpu(), minlength=num_classes)
        seen += len(labels)
    if seen == 0:
        raise ValueError(f"{desc}: no images to evaluate")
    return {"loss": loss_sum / seen, "top1": top1 / seen, "top5": top5 / seen if num_classes >= 5 else None,
            "class_total": class_total.tolist(), "class_correct": class_correct.tolist(), "images": seen}


class ClassificationTrainer:
    """Trains and evaluates image classifiers for the engine's round loop."""

    def __init__(self, cfg: ClsRunConfig, run_dir: str | Path | None = None, dist: DistContext | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = pick_device(cfg.train.device)
        self.amp = use_amp(self.device, cfg.train.amp)
        if cfg.train.cpu_threads is not None:
            torch.set_num_threads(cfg.train.cpu_threads)
        data = cfg.data
        if data.synthetic is not None:
            # Rank 0 writes the synthetic data; the other ranks read it once it is complete.
            run_on_main(dist, ensure_synthetic, data.name, data.root, **data.synthetic.generator_arguments(data.name))
        self.train_split = load_dataset(data.name, data.root, train=True)
        self.test_split = load_dataset(data.name, data.root, train=False)
        self.class_names = list(self.train_split.class_names)
        # One stratified hold-out for every partition and the ticket evaluations: never the test set.
        self.train_indices, self.val_indices = train_val_split(self.train_split.labels, data.val_fraction,
                                                               derive_seed(cfg.seed, "val-split"))
        self.train_transform = build_transforms(data.name, True, data.image_size)
        self.eval_transform = build_transforms(data.name, False, data.image_size)
        probe = self.build_model(len(self.class_names))
        rules = prune_group_rules(probe)
        self.head_name: str = probe.head_name
        self.output_layers = list(rules["output_layers"])
        self.default_prune_groups = rules["groups"]
        log.info("%s: %d classes, %d training / %d validation / %d test images; training on %s%s",
                 data.name, len(self.class_names), len(self.train_indices), len(self.val_indices),
                 len(self.test_split), self.device, " with mixed precision" if self.amp else "")

    # ----- the Trainer protocol ----------------------------------------------------------------
    def build_model(self, num_outputs: int) -> nn.Module:
        """A freshly initialised classifier with `num_outputs` classes (seeded by the caller)."""
        m = self.cfg.model
        try:
            return create_model(m.name, num_outputs, init=m.init, pretrained_path=m.pretrained_path,
                                **m.create_kwargs())
        except (ValueError, TypeError, FileNotFoundError) as exc:
            raise ConfigError(f"model: {exc}") from None

    def architecture(self) -> dict[str, Any]:
        """The model's description for ticket files, tagged with the task and the dataset it was found on."""
        m = self.cfg.model
        description = describe_architecture(m.name, {**m.create_kwargs(), "init": m.init})
        return {"task": "classification", **description, "head": self.head_name,
                "dataset": self.cfg.data.name, "num_classes": len(self.class_names)}

    def datasets(self, class_ids: list[int] | None, non_iid_max_drop: float = 0.0, data_seed: int = 0
                 ) -> tuple[ImageClassificationDataset, ImageClassificationDataset]:
        """Training and validation datasets of one partition, labels remapped to 0..|class_ids|-1 (all
        classes, labels as in the dataset, when `class_ids` is None); non-IID drops a share of each class's
        training images."""
        labels = self.train_split.labels
        train_idx, val_idx = self.train_indices, self.val_indices
        if non_iid_max_drop > 0:
            train_idx = train_idx[non_iid_keep(labels[train_idx], data_seed, non_iid_max_drop)]
        label_map = None
        if class_ids is not None:
            positions, label_map = subset_by_classes(labels[train_idx], class_ids)
            train_idx = train_idx[positions]
            positions, _ = subset_by_classes(labels[val_idx], class_ids)
            val_idx = val_idx[positions]
        train = ImageClassificationDataset(self.train_split, train_idx, self.train_transform, label_map)
        val = ImageClassificationDataset(self.train_split, val_idx, self.eval_transform, label_map)
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(f"the partition of classes {class_ids} has {len(train)} training and "
                              f"{len(val)} validation images; use more data, a larger data.val_fraction or "
                              "fewer partitions")
        return train, val

    def _loader(self, dataset: Any, batch_size: int, generator: torch.Generator | None = None,
                sampler: Any = None) -> DataLoader:
        shuffle = generator is not None or sampler is not None
        per_rank = len(sampler) if sampler is not None else len(dataset)
        return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                          sampler=sampler,
                          # A last training batch of one image breaks BatchNorm; drop it.
                          drop_last=shuffle and per_rank % batch_size == 1,
                          num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda")

    def _validate(self, model: nn.Module, loader: DataLoader, num_classes: int, ctx: DistContext | None
                  ) -> tuple[float, float]:
        """Validation loss and top-1 accuracy; over every rank's shard when several ranks train."""
        result = evaluate_classifier(model, loader, self.device, num_classes, amp=self.amp)
        if ctx is None or not ctx.data_parallel:
            return result["loss"], result["top1"]
        images = result["images"]
        loss_sum, correct, count = all_reduce_sums([result["loss"] * images, result["top1"] * images, images], ctx)
        return loss_sum / count, correct / count

    def train(self, job: TrainJob) -> TrainOutput:
        """Train `job.model` on the job's classes under its mask; keep the lowest-validation-loss weights."""
        cfg = self.cfg.train
        train_ds, val_ds = self.datasets(job.class_ids, job.non_iid_max_drop, job.data_seed)
        data_summary = {"train_images": len(train_ds), "val_images": len(val_ds),
                        "classes": train_ds.num_classes}
        log.info("%s: %d classes, %d training and %d validation images", job.tag, train_ds.num_classes,
                 len(train_ds), len(val_ds))
        ctx = job.dist  # several ranks: each trains on its share of the images (batch_size per rank)
        writes = ctx is None or ctx.is_group_main
        sampler = distributed_sampler(train_ds, ctx, shuffle=True, seed=derive_seed(job.seed, "sampler"))
        shuffling = torch.Generator() if sampler is None else None
        train_loader = self._loader(train_ds, cfg.batch_size, shuffling, sampler)
        val_loader = self._loader(shard_for_evaluation(val_ds, ctx), self.cfg.eval.batch_size)
        iterations = len(train_loader)
        model = job.model.to(self.device)
        optimizer = build_optimizer(model, cfg.optimizer)
        try:
            scheduler = build_lr_scheduler(optimizer, cfg.schedule, epochs=cfg.epochs,
                                           iters_per_epoch=iterations)
        except ValueError as exc:
            raise ConfigError(f"train.schedule: {exc}") from None
        late = LateRewind(model, scheduler, job.rewind_iteration, total_steps=cfg.epochs * iterations, tag=job.tag)
        keeper = MaskKeeper(model, job.mask, optimizer)  # masks name the parameters of the unwrapped model
        net = wrap_ddp(model, ctx)
        scaler = torch.amp.GradScaler("cuda") if self.amp else None
        writer = self._writer(job) if writes else None
        last_val: dict[str, float] = {}

        def after_step(loss: float) -> None:
            step = late.after_step()
            if writer is not None and step % LOG_EVERY == 0:
                writer.add_scalar("train/loss", loss, step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)

        def train_epoch(epoch: int) -> dict[str, float]:
            set_sampler_epoch(train_loader, epoch)
            return train_one_epoch(net, train_loader, optimizer, self.device, scheduler=scheduler,
                                   keeper=keeper, scaler=scaler, after_step=after_step, progress=cfg.progress,
                                   desc=f"{job.tag} epoch {epoch + 1}/{cfg.epochs}")

        def val_loss() -> float:
            loss, last_val["accuracy"] = self._validate(model, val_loader, train_ds.num_classes, ctx)
            return loss

        def on_epoch_end(epoch: int, stats: dict[str, float]) -> None:
            log.info("%s epoch %d/%d: loss %.4f, train acc %.2f%%, val loss %.4f, val acc %.2f%%", job.tag,
                     epoch + 1, cfg.epochs, stats["loss"], 100 * stats["accuracy"], stats["val_loss"],
                     100 * last_val["accuracy"])
            if writer is not None:
                writer.add_scalar("epoch/loss", stats["loss"], epoch)
                writer.add_scalar("epoch/train_accuracy", stats["accuracy"], epoch)
                writer.add_scalar("epoch/val_loss", stats["val_loss"], epoch)
                writer.add_scalar("epoch/val_accuracy", last_val["accuracy"], epoch)
                writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch)
                writer.flush()

        checkpoint = job.workdir / "train_state.pt"
        result = fit(model, epochs=cfg.epochs, train_epoch=train_epoch, val_loss=val_loss,
                     optimizer=optimizer, seed=job.seed, scheduler=scheduler, scheduler_interval="step",
                     scaler=scaler, keeper=keeper, checkpoint_path=checkpoint, on_epoch_end=on_epoch_end,
                     rewind_state=lambda: late.state,
                     settings={"iterations_per_epoch": iterations, "batch_size": cfg.batch_size,
                               "rewind_iteration": job.rewind_iteration, **data_summary},
                     generators=[shuffling] if shuffling is not None else [], dist=ctx)
        if writes:
            checkpoint.unlink(missing_ok=True)
        if writer is not None:
            writer.close()
        _, best_accuracy = self._validate(model, val_loader, train_ds.num_classes, ctx)
        metrics = {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                   "val_accuracy": best_accuracy, "history": result.history, "data": data_summary}
        return TrainOutput(result.best_state, metrics, result.rewind_state)

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Top-1 (and top-5) accuracy of a full-data model on the test set, and accuracy per class."""
        test = ImageClassificationDataset(self.test_split, transform=self.eval_transform)
        loader = self._loader(test, self.cfg.eval.batch_size)
        model = model.to(self.device)
        result = evaluate_classifier(model, loader, self.device, len(self.class_names), amp=self.amp,
                                     progress=self.cfg.train.progress, desc=f"{job.tag} test")
        per_class = {name: (correct / total if total else math.nan) for name, correct, total
                     in zip(self.class_names, result["class_correct"], result["class_total"], strict=True)}
        return {"metric": "top-1 accuracy", "value": result["top1"], "top5": result["top5"],
                "test_loss": result["loss"], "test_images": result["images"], "per_class": per_class}

    def _writer(self, job: TrainJob):
        if self.run_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb" / job.tag.replace("/", "_")))


def train_ticket(trainer: ClassificationTrainer, ticket_path: str | Path, run_dir: str | Path, *, seed: int,
                 config_dict: Mapping[str, Any] | None = None, dist: DistContext | None = None) -> dict[str, Any]:
    """Train a ticket (mask + θ0, possibly found on another dataset) on `trainer`'s full dataset; evaluate it.

    The model comes from the trainer's config with the dataset's class count; every weight but the freshly
    initialised head must match the ticket's names and shapes. Writes config.yaml, model.pt and metrics.json
    under `run_dir` (an unfinished training resumes from its checkpoint there) and returns the metrics.
    Under torchrun (`dist`) every rank trains data-parallel and rank 0 alone writes and evaluates.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"

    def stored_metrics() -> dict[str, Any] | None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config_dict is not None and not (run_dir / "config.yaml").is_file():
            import yaml

            atomic_write_text(yaml.safe_dump(dict(config_dict), sort_keys=False), run_dir / "config.yaml")
        return read_json(metrics_path) if metrics_path.is_file() else None

    stored = run_on_main(dist, stored_metrics)
    if stored is not None:
        return stored
    seed_everything(derive_seed(seed, "head", "ticket"))
    model = trainer.build_model(len(trainer.class_names))
    ticket = load_ticket(ticket_path)
    task = ticket.architecture.get("task")
    if task != "classification":
        name = ticket.architecture.get("name", "unknown architecture")
        raise TicketError(f"{ticket_path}: a {task or 'non-classification'} ticket ({name}) cannot be "
                          "trained as a classifier")
    check_ticket_fits(ticket, model, trainer.output_layers, source=str(ticket_path))
    rewind(model, ticket.init, ticket.mask, trainer.output_layers, keep_output=True)
    job = TrainJob(round=0, partition=None, class_ids=None, model=model, mask=ticket.mask,
                   seed=derive_seed(seed, "ticket", "transfer"), workdir=run_dir,
                   data_seed=derive_seed(seed, "data"), dist=dist)
    start = time.perf_counter()
    out = trainer.train(job)
    model.load_state_dict(out.state_dict)

    def evaluate_and_write() -> dict[str, Any]:
        metrics = dict(trainer.evaluate(model, job))
        total_params = sum(p.numel() for p in model.parameters())
        sparsity = sparsity_report(ticket.mask, total_params=total_params)
        metrics.update(
            train=out.metrics, wall_time_s=time.perf_counter() - start,
            ticket={"path": str(ticket_path), "architecture": ticket.architecture, "meta": ticket.meta,
                    "sparsity": sparsity["overall"]["sparsity"], "prune_rate": sparsity["prune_rate"]["rate"]})
        atomic_save(out.state_dict, run_dir / "model.pt")
        atomic_write_json(metrics, metrics_path)
        return metrics

    return run_on_main(dist, evaluate_and_write)
