"""The classification task: partition datasets, cross-entropy, and top-1/top-5 and per-class test accuracy.

Partitions hold their classes' images with labels remapped to 0..|group|-1; the validation images are a
stratified hold-out of the training data, the same for every partition and every ticket evaluation.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from colt_cls.config import ClsRunConfig
from colt_cls.datasets import (
    ImageClassificationDataset,
    build_transforms,
    load_dataset,
    subset_by_classes,
    train_val_split,
)
from colt_cls.figure import confusion_preview
from colt_cls.models import create_model, describe_architecture, prune_group_rules
from colt_cls.synthetic import ensure_synthetic
from colt_core.config import ConfigError
from colt_core.distributed import DistContext, run_on_main
from colt_core.intervals import Bootstrap
from colt_core.io import atomic_write_json
from colt_core.prune.partition import non_iid_keep
from colt_core.runtime import derive_seed, progress_bar
from colt_core.train.speed import FULL, Precision
from colt_core.train.task import TrainJob

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
                        amp: Precision = FULL, progress: bool = False, desc: str = "eval") -> dict[str, Any]:
    """Mean cross-entropy, top-1 and top-5 accuracy (top-5 only with >= 5 classes), per-class counts and the
    confusion matrix (`confusion[true][predicted]` images; its rows sum to `class_total`); `hits` says per image,
    in loader order, whether its top-1 class is right."""
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    hits = []  # per test image, whether its top-1 class is right: what the bootstrap interval resamples
    class_total = torch.zeros(num_classes, dtype=torch.long)
    class_correct = torch.zeros(num_classes, dtype=torch.long)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long)
    for images, labels in progress_bar(loader, progress, desc):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with amp.autocast(device):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hit = logits.argmax(1) == labels
        hits.append(hit.cpu())
        top1 += int(hit.sum())
        if num_classes >= 5:
            top5 += int((logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum())
        class_total += torch.bincount(labels.cpu(), minlength=num_classes)
        class_correct += torch.bincount(labels[hit].cpu(), minlength=num_classes)
        confusion += torch.bincount((labels * num_classes + logits.argmax(1)).cpu(), minlength=num_classes ** 2)
        seen += len(labels)
    if seen == 0:
        raise ValueError(f"{desc}: no images to evaluate")
    return {"loss": loss_sum / seen, "top1": top1 / seen, "top5": top5 / seen if num_classes >= 5 else None,
            "class_total": class_total.tolist(), "class_correct": class_correct.tolist(), "images": seen,
            "confusion": confusion.view(num_classes, num_classes).tolist(), "hits": torch.cat(hits).numpy()}


class ClassificationTask:
    """Image classifiers on CIFAR-10/100, TinyImageNet or ImageNet (or their synthetic twins)."""

    collate = None
    fixed_input_size = True  # fixed crops: cuDNN can autotune on a GPU

    def __init__(self, cfg: ClsRunConfig, dist: DistContext | None = None) -> None:
        self.cfg = cfg
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
        self.train_transform = build_transforms(data.name, True, data.image_size, data.hflip)
        self.eval_transform = build_transforms(data.name, False, data.image_size)
        probe = self.build_model(len(self.class_names))
        rules = prune_group_rules(probe)
        self.head_name: str = probe.head_name
        self.output_layers = list(rules["output_layers"])
        self.default_prune_groups = rules["groups"]
        log.info("%s: %d classes, %d training / %d validation / %d test images", data.name, len(self.class_names),
                 len(self.train_indices), len(self.val_indices), len(self.test_split))

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

    def datasets(self, class_ids: list[int] | None, job: TrainJob | None = None
                 ) -> tuple[ImageClassificationDataset, ImageClassificationDataset]:
        """Training and validation sets of `class_ids`, labels remapped to 0..|class_ids|-1 (every class, labels
        as in the dataset, when None); a non-IID job drops a seeded share of each class's training images."""
        labels = self.train_split.labels
        train_idx, val_idx = self.train_indices, self.val_indices
        if job is not None and job.non_iid_max_drop > 0:
            train_idx = train_idx[non_iid_keep(labels[train_idx], job.data_seed, job.non_iid_max_drop)]
        label_map = None
        if class_ids is not None:
            positions, label_map = subset_by_classes(labels[train_idx], class_ids)
            train_idx = train_idx[positions]
            positions, _ = subset_by_classes(labels[val_idx], class_ids)
            val_idx = val_idx[positions]
        return (ImageClassificationDataset(self.train_split, train_idx, self.train_transform, label_map),
                ImageClassificationDataset(self.train_split, val_idx, self.eval_transform, label_map))

    def example_inputs(self, model: nn.Module) -> torch.Tensor:
        """One test image as the model sees it, a batch of one: what a channel ticket's model is traced on."""
        image, _ = ImageClassificationDataset(self.test_split, transform=self.eval_transform)[0]
        return image.unsqueeze(0)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy, and the batch's accuracy (logged only)."""
        images, labels = batch
        logits = model(images)
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(1) == labels).double().mean()}

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Top-1 (and top-5) accuracy of a full-data model on the test set, top-1's bootstrap interval over the test
        images (seeded by the run's seed), and accuracy per class; the confusion
        matrix goes to the preview file the report draws (`colt_cls.figure`)."""
        test = ImageClassificationDataset(self.test_split, transform=self.eval_transform)
        result = evaluate_classifier(model, job.loader(test), job.device, len(self.class_names), amp=job.amp,
                                     progress=self.cfg.train.progress, desc=f"{job.tag} test")
        atomic_write_json(confusion_preview(self.class_names, result["confusion"]), job.files.preview)
        per_class = {name: (correct / total if total else math.nan) for name, correct, total
                     in zip(self.class_names, result["class_correct"], result["class_total"], strict=True)}
        bootstrap = Bootstrap(seed=derive_seed(self.cfg.seed, "bootstrap"))
        return {"metric": "top-1 accuracy", "value": result["top1"],
                "interval": bootstrap.mean_interval(result["hits"]), "interval_method": bootstrap.method(),
                "top5": result["top5"],
                "test_loss": result["loss"], "test_images": result["images"], "per_class": per_class,
                "test_per_class": dict(zip(self.class_names, map(int, result["class_total"]), strict=True))}
