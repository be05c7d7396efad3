"""The detection task: Faster R-CNN VGG16 or a torchvision detector on Pascal VOC or COCO-format partitions,
scored by per-class VOC and COCO AP.

An image belongs to partition i when it holds an object of group i; objects of other groups are dropped
from its targets there. The validation images are a seeded image-level hold-out of the training images.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from colt_core.config import ConfigError
from colt_core.distributed import DistContext, run_on_main
from colt_core.intervals import Bootstrap
from colt_core.io import atomic_write_json
from colt_core.prune.partition import non_iid_keep
from colt_core.runtime import derive_seed
from colt_core.train.task import TrainJob
from colt_det.coco import load_coco
from colt_det.coco_eval import coco_results, evaluate_coco, evaluate_coco_results, write_coco_results
from colt_det.config import DetRunConfig
from colt_det.data import DetectionDataset, ImageRecord, collate_detection
from colt_det.detectors import build as build_detector
from colt_det.detectors import family, prune_group_specs
from colt_det.figure import detection_preview
from colt_det.intervals import evaluate_voc_metrics
from colt_det.model import build_vgg16_faster_rcnn
from colt_det.predict import detect, losses_in_eval_mode
from colt_det.pretrained import PretrainedWeights, record, resolve_pretrained
from colt_det.synthetic import ensure_synthetic_coco, ensure_synthetic_voc
from colt_det.transforms import build_transforms
from colt_det.voc import VOC_CLASSES, load_voc_records
from colt_det.voc_eval import write_results_files


def split_train_val(records: Sequence[ImageRecord], val_fraction: float, seed: int, *, keep_difficult: bool = False,
                    num_classes: int = len(VOC_CLASSES)) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """A seeded image-level hold-out of the training images for model selection (never the test set).

    A share `val_fraction` of the images, drawn at random; then, so that every partition of classes can be
    trained and validated on small datasets too, a class left without training images gets one back, and
    a class held by two or more images but by no validation image gets one moved over (an image whose
    classes all keep a training image). On a dataset the random draw already covers, nothing moves.
    """
    def classes(i: int) -> set[int]:
        return {o.label for o in records[i].objects if not o.crowd and (keep_difficult or not o.difficult)}

    order = np.random.default_rng(seed).permutation(len(records)).tolist()
    val = set(order[:max(1, round(val_fraction * len(records)))])
    count = {"train": np.zeros(num_classes, dtype=np.int64), "val": np.zeros(num_classes, np.int64)}
    for i in order:
        count["val" if i in val else "train"][list(classes(i))] += 1

    def move(i: int, to: str) -> None:
        (val.add if to == "val" else val.discard)(i)
        held = list(classes(i))
        count[to][held] += 1
        count["train" if to == "val" else "val"][held] -= 1

    for c in np.flatnonzero((count["train"] == 0) & (count["val"] > 0)).tolist():
        if count["train"][c] == 0:
            move(next(i for i in order if i in val and c in classes(i)), "train")
    for c in np.flatnonzero((count["val"] == 0) & (count["train"] > 1)).tolist():
        for i in order:
            held = classes(i)
            if count["val"][c] == 0 and i not in val and c in held and all(count["train"][d] > 1 for d in held):
                move(i, "val")
                break
    return ([r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val])


def trace_faster_rcnn(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """What a channel ticket's Faster R-CNN is traced through: backbone, RPN head, and the box head on two fixed
    boxes, so the RPN conv and fc6 read the last backbone features. The box predictor is left out: its input is
    the representation size the detector fixes, so the box head's outputs stay whole."""
    features = model.backbone(images)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    objectness, deltas = model.rpn.head(list(features.values()))
    h, w = images.shape[-2:]
    boxes = [torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w - 1.0, h - 1.0]])] * len(images)
    pooled = model.roi_heads.box_roi_pool(features, boxes, [(h, w)] * len(images))
    return [*objectness, *deltas, model.roi_heads.box_head(pooled)]


def detector_loss(model: nn.Module, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
    """torchvision's loss dict of a batch; in eval mode (validation) the detector runs in `losses_in_eval_mode`."""
    images, targets = batch
    if model.training:
        return model(images, targets)
    with losses_in_eval_mode(model):
        return model(images, targets)


class DetectionTask:
    """Detectors (Faster R-CNN VGG16 or a torchvision family) on Pascal VOC or COCO-format data."""

    class_names: Sequence[str] = VOC_CLASSES  # a COCO dataset's category names once it is read
    collate = staticmethod(collate_detection)

    def __init__(self, cfg: DetRunConfig, dist: DistContext | None = None,
                 pretrained: PretrainedWeights | None = None) -> None:
        self.cfg = cfg
        self.family = family(cfg.model.arch)
        # The pretrained weights, resolved once (the tools resolve them before anything else).
        self.pretrained = pretrained if pretrained is not None else resolve_pretrained(cfg.model, dist=dist)
        data = cfg.data
        records, self.test_records = self._read_data(dist)
        self.train_records, self.val_records = split_train_val(records, data.val_fraction,
                                                               derive_seed(cfg.seed, "val-split"),
                                                               keep_difficult=data.keep_difficult,
                                                               num_classes=len(self.class_names))
        aug = cfg.augment
        self.fixed_input_size = aug.input_size is not None  # stretched to size²: cuDNN can autotune on a GPU
        self.train_transform = build_transforms(True, aug.input_size, hflip_p=aug.hflip, jitter=aug.jitter)
        self.eval_transform = build_transforms(False, aug.input_size)
        # The family names its outputs; a built model turns them (and the prune groups) into its own layers.
        probe = self.build_model(len(self.class_names))
        self.output_layers = tuple(self.family.class_output_layers(probe))
        self.default_prune_groups = prune_group_specs(probe, self.family)

    def _read_data(self, dist: DistContext | None) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """The training and test records (a VOC devkit's image sets, or COCO files), the synthetic twin
        written first when the config asks for one (by rank 0; the others read it once it is complete)."""
        data = self.cfg.data
        if data.format == "coco":
            if data.synthetic is not None:
                run_on_main(dist, ensure_synthetic_coco, data.root, **asdict(data.synthetic))
            pairs, test = data.coco_pairs()
            records, self.categories, self.bad_annotations = load_coco(
                pairs, on_bad_annotation=data.on_bad_annotation, keep_empty=data.keep_empty_images)
            test_records, _, self.test_skipped = load_coco([test], on_bad_annotation=data.on_bad_test_annotation,
                                                           categories=self.categories)
            self.class_names = self.categories.names
            return records, test_records
        if data.synthetic is not None:
            run_on_main(dist, ensure_synthetic_voc, data.root, **asdict(data.synthetic))
        self.categories = None
        records, self.bad_annotations = load_voc_records(data.root, data.train_sets,
                                                         on_bad_annotation=data.on_bad_annotation)
        test_records, self.test_skipped = load_voc_records(data.root, data.test_sets,
                                                           on_bad_annotation=data.on_bad_test_annotation)
        return records, test_records

    def build_model(self, num_outputs: int) -> nn.Module:
        """A detector for `num_outputs` object classes (+1 background output), pretrained as the config asks: θ0
        is the pretrained backbone (or COCO detector) with freshly initialised other layers."""
        weights, model = self.pretrained, self.cfg.model
        try:
            if model.arch == "vgg16":
                return build_vgg16_faster_rcnn(num_outputs + 1, **model.build_kwargs(),
                                               pretrained_backbone=weights.state if weights else None)
            detector = weights.weights if weights is not None and weights.detector else None
            backbone = weights.weights if weights is not None and not weights.detector else None
            return build_detector(model.arch, num_outputs + 1, weights_backbone=backbone, coco=detector,
                                  kwargs=model.kwargs)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from None

    def architecture(self) -> dict[str, Any]:
        """The detector's description for ticket files, with the weights it started from."""
        return {**self.cfg.model.architecture(len(self.class_names) + 1), "pretrained": record(self.pretrained)}

    def datasets(self, class_ids: list[int] | None, job: TrainJob | None = None
                 ) -> tuple[DetectionDataset, DetectionDataset]:
        """Training and validation sets of one partition (all classes when `class_ids` is None)."""
        train_records = self.train_records
        if job is not None and job.non_iid_max_drop:
            # Non-IID: each class loses its own random share of the images whose first object it labels.
            first = [r.objects[0].label if r.objects else -1 for r in train_records]
            train_records = [train_records[i] for i in non_iid_keep(first, job.data_seed, job.non_iid_max_drop)]
        keep_difficult = self.cfg.data.keep_difficult
        return (DetectionDataset(train_records, self.train_transform, keep_difficult, class_ids,
                                 classes=self.class_names),
                DetectionDataset(self.val_records, self.eval_transform, keep_difficult, class_ids,
                                 classes=self.class_names))

    def loss(self, model: nn.Module, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        return detector_loss(model, batch)

    def example_inputs(self, model: nn.Module) -> torch.Tensor:
        """One blank image of the training size, what a channel ticket's detector is traced on (`forward_fn`)."""
        if not isinstance(model, FasterRCNN):
            raise ConfigError(f"prune.granularity: channel: model.arch {self.cfg.model.arch} is not a Faster R-CNN; "
                              "channel tickets support vgg16 and the fasterrcnn_* detectors")
        side = self.cfg.augment.input_size or 224
        return torch.zeros(1, 3, side, side)

    forward_fn = staticmethod(trace_faster_rcnn)

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Per-class AP of a full-data detector on the test set: VOC07 and VOC12 (IoU 0.5) and COCO-style
        mAP@[.5:.95]; on COCO data the last is pycocotools' COCOeval of the test annotations file. Each mAP (and
        COCO's AP50) carries its bootstrap interval over the test images (`colt_det.intervals`). The
        detections are kept as Pascal VOC results files, or on COCO data as a COCO results file, and those on the
        first few test images (`colt_det.figure`) in the preview file the report draws."""
        cfg = self.cfg
        classes = list(self.class_names)
        detections = detect(model, self.test_records, size=cfg.augment.input_size, device=job.device, amp=job.amp,
                            loader=job.loader, progress=cfg.train.progress, classes=classes)
        atomic_write_json(detection_preview(self.test_records, detections, classes), job.files.preview)
        bootstrap = Bootstrap(seed=derive_seed(cfg.seed, "bootstrap"))  # each mAP's interval over the test images
        scores = evaluate_voc_metrics(detections, self.test_records, classes=classes, bootstrap=bootstrap)
        if self.categories is not None:
            results = coco_results(detections, self.test_records, self.categories)
            write_coco_results(job.files.detections, results)
            _, test = cfg.data.coco_pairs()
            scores["coco"] = evaluate_coco_results(test[1], results, categories=self.categories,
                                                   image_ids=[r.source_id for r in self.test_records],
                                                   bootstrap=bootstrap)
        else:
            write_results_files(job.files.outputs, detections)
            if cfg.eval.coco or cfg.eval.metric == "coco":
                scores["coco"] = evaluate_coco(detections, self.test_records, classes, bootstrap=bootstrap)
        primary = scores[cfg.eval.metric]
        # What skip mode left out, so that metrics.json, summary.json and report.md say it beside the numbers.
        skipped = {key: stats.as_dict() for key, stats in (("train_skipped", self.bad_annotations),
                                                           ("test_skipped", self.test_skipped)) if stats.num_skipped}
        counts = Counter(o.name for r in self.test_records for o in r.objects if not o.ignored)  # AP's objects
        return {"metric": f"{cfg.eval.metric} mAP", "value": primary["mAP"], "interval": primary["interval"],
                "interval_method": bootstrap.method(), "per_class": primary["per_class"],
                "test_images": len(self.test_records), "test_per_class": {c: counts.get(c, 0) for c in classes},
                **skipped, **scores}
