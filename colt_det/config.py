"""The detection run's config: data, model, augmentation, training, evaluation, plus the engine's sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from colt_core.config import at_least, closed_interval, field, positive
from colt_core.settings import DataConfig as BaseDataConfig
from colt_core.settings import EvalConfig, RunConfig
from colt_det.synthetic import coco_instances_path
from colt_det.voc import VOC_CLASSES, parse_sets

DETECTION_ARCHITECTURE = "fasterrcnn_vgg16"


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic dataset generated under `data.root` when missing (VOC or its COCO twin)."""

    seed: int = field(0, help="generator seed")
    image_size: int = field(128, help="square image side in pixels", check=at_least(32))
    n_trainval: int = field(400, help="trainval images", check=at_least(2))
    n_test: int = field(200, help="test images", check=at_least(1))
    min_objects: int = field(1, help="fewest objects per image", check=at_least(1))
    max_objects: int = field(3, help="most objects per image", check=at_least(1))
    difficult_fraction: float = field(0.05, help="share of objects marked difficult", check=closed_interval(0, 1))
    num_classes: int = field(len(VOC_CLASSES), help="objects come from the first this many VOC class names",
                             check=closed_interval(1, len(VOC_CLASSES)))


@dataclass
class DataConfig(BaseDataConfig):
    """Where the data live: a Pascal VOC devkit and its image sets, or COCO instances files and image folders (a
    seeded share of the training images is held out for model selection)."""

    format: Literal["voc", "coco"] = field("voc", help="voc: a VOCdevkit under root; coco: instances JSON files "
                                                       "with their image folders (train_* and test_* below)")
    root: str = field("data/voc", help="voc: the folder holding VOCdevkit/ (or the VOCdevkit folder itself); "
                                       "with synthetic, where the synthetic data are written")
    train_sets: str = field("2007+2012:trainval", help="training image sets, e.g. 2007:trainval or 2007+2012:trainval")
    test_sets: str = field("2007:test", help="test image sets for the reported mAP")
    keep_difficult: bool = field(False, help="train on difficult objects too (they are always ignored in evaluation)")
    on_bad_annotation: Literal["error", "skip"] = field(
        "error", help="training images with a bad annotation: error (stop, naming the file) or skip (leave the "
                      "image out with a warning, counted by reason in metrics.json and report.md); an image path "
                      "leading outside its folder stops the run either way")
    on_bad_test_annotation: Literal["error", "skip"] = field(
        "error", help="test images with a bad annotation: error, or skip, which leaves them out of the reported "
                      "metrics and says how many images and objects in report.md and metrics.json")
    train_images: list[str] = field(default_factory=list, one_or_more=True,
                                    help="coco: the training image folders, one per train_annotations file (one "
                                         "folder may be given as a plain path)")
    train_annotations: list[str] = field(default_factory=list, one_or_more=True,
                                         help="coco: the training instances JSON files (one may be given as a plain "
                                              "path)")
    test_images: str | None = field(None, help="coco: the test image folder")
    test_annotations: str | None = field(None, help="coco: the test instances JSON file")
    keep_empty_images: bool = field(True, help="coco: keep training images without annotations (all background)")
    synthetic: SyntheticConfig | None = field(None, help="generate this synthetic dataset under root when missing")

    def validate(self) -> list[tuple[str, str]]:
        coco_keys = ("train_images", "train_annotations", "test_images", "test_annotations")
        given = [k for k in coco_keys if getattr(self, k)]
        if self.format == "voc":
            if given:
                return [(given[0], "is for data.format: coco")]
            return [(key, problem) for key in ("train_sets", "test_sets")
                    if (problem := _image_sets_problem(getattr(self, key)))][:1]
        if self.synthetic is not None:
            return [(given[0], "comes from data.root with a synthetic dataset; leave it out")] if given else []
        if not self.train_images or len(self.train_images) != len(self.train_annotations):
            return [("train_annotations", f"needs one instances file per image folder of train_images, got "
                                          f"{len(self.train_annotations)} for {len(self.train_images)}")]
        missing = [k for k in ("test_images", "test_annotations") if not getattr(self, k)]
        return [(missing[0], "is needed with data.format: coco")] if missing else []

    def coco_pairs(self) -> tuple[list[tuple[str, str]], tuple[str, str]]:
        """The (images, annotations) pairs of the training sets and the test set (the synthetic twin's under
        root when there is one)."""
        if self.synthetic is not None:
            root = Path(self.root)
            return ([(str(root / "train"), str(coco_instances_path(root, "train")))],
                    (str(root / "test"), str(coco_instances_path(root, "test"))))
        return (list(zip(self.train_images, self.train_annotations, strict=True)),
                (str(self.test_images), str(self.test_annotations)))


def _image_sets_problem(sets: str) -> str | None:
    """What is wrong with a `data.train_sets` or `data.test_sets` value ("2007+2012:trainval"), or None."""
    try:
        parse_sets(sets)
    except ValueError as exc:
        return str(exc)
    return None


# FasterRCNN keywords that were settings of their own beside the vgg16 ones; configs write them in model.kwargs.
MOVED_TO_KWARGS = ("min_size", "max_size", "rpn_batch_size_per_image", "rpn_pre_nms_top_n_train",
                   "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                   "box_batch_size_per_image", "box_positive_fraction", "box_score_thresh", "box_detections_per_img")


@dataclass
class ModelConfig:
    """The detector: the paper's Faster R-CNN VGG16 (and its tiny variants), or a torchvision detector by name;
    either takes its model's further keywords in `kwargs`."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {key: f"kwargs.{key}" for key in MOVED_TO_KWARGS}

    arch: str = field("vgg16", help="vgg16 (the paper's Faster R-CNN VGG16; the vgg16 settings below shape it), or "
                                    "a torchvision builder: fasterrcnn_resnet50_fpn(_v2), fasterrcnn_mobilenet_v3_large"
                                    "(_320)_fpn, retinanet_resnet50_fpn(_v2), fcos_resnet50_fpn, ssd300_vgg16, "
                                    "ssdlite320_mobilenet_v3_large")
    kwargs: dict[str, Any] = field(
        default_factory=dict,
        help="further keywords for the model: for vgg16 those of torchvision's FasterRCNN (min_size and max_size, "
             "by default py-faster-rcnn's 600 and 1000; rpn_batch_size_per_image, rpn_pre_nms_top_n_train, "
             "box_batch_size_per_image, box_score_thresh, by default 0.0, which keeps every detection for AP; ...), "
             "for a torchvision arch its builder's and its model's (min_size, trainable_backbone_layers, "
             "box_score_thresh, ...)")
    pretrained: Literal["none", "coco"] | None = field(
        None, help="coco: start from torchvision's COCO-trained detector (its DEFAULT weights), with fresh "
                   "class-specific output layers for the data's classes; null/none: no detector weights")
    width: float = field(1.0, help="vgg16: backbone channel multiplier (1.0 = VGG16)", check=positive)
    head_dim: int = field(4096, help="vgg16: fc6/fc7 size (4096 = VGG16)", check=at_least(1))
    head_dropout: float = field(0.5, help="vgg16: dropout after fc6 and fc7", check=closed_interval(0.0, 0.95))
    norm: Literal["none", "batch", "group"] = field(
        "none", help="vgg16: norm layer after each backbone conv: none (VGG16), batch (vgg16_bn) or group "
                     "(GroupNorm)")
    roi_pool: Literal["align", "pool"] = field("align", help="vgg16: RoIAlign (default) or the classic RoIPool, 7x7")
    anchor_sizes: list[int] = field(default_factory=lambda: [128, 256, 512], help="vgg16: RPN anchor sizes in pixels")
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0],
                                       help="vgg16: RPN anchor aspect ratios")
    init: Literal["xavier", "torchvision"] = field("xavier", help="vgg16: weight initialisation")
    pretrained_backbone: str | None = field(
        None, help="imagenet: torchvision's VGG16_Weights.IMAGENET1K_V1 (VGG16_BN_Weights for norm batch) "
                   "through its weights API and torch.hub's cache; null or none: train from scratch; or the "
                   "path of a local torchvision-format vgg16/vgg16_bn state_dict")
    pretrained_sha256: str | None = field(
        None, help="SHA-256 of the pretrained weights file: filled in by the run (so --resume refuses other "
                   "weights); set it to pin the file")

    def validate(self) -> list[tuple[str, str]]:
        if self.arch != "vgg16":
            return self._check_torchvision_arch()
        if self.pretrained == "coco":
            return [("pretrained", "torchvision has no COCO-trained Faster R-CNN VGG16; use a torchvision arch, "
                                   "or pretrained_backbone: imagenet")]
        if self.pretrained_backbone == "imagenet" and self.norm == "group":
            return [("pretrained_backbone", "torchvision has no ImageNet VGG16 with GroupNorm; use norm none or "
                                            "batch, or a local file")]
        if self.pretrained_backbone == "imagenet" and self.width != 1.0:
            return [("pretrained_backbone", f"ImageNet VGG16 weights need width 1.0, got {self.width}")]
        return self._check_vgg16_kwargs()

    def _check_vgg16_kwargs(self) -> list[tuple[str, str]]:
        from colt_det.model import faster_rcnn_keywords  # torchvision is imported only once a detector is asked for

        settings = {f.name for f in fields(self)}
        allowed = faster_rcnn_keywords()
        for key in self.kwargs:
            if key in settings:
                return [(f"kwargs.{key}", f"is a setting of its own; write it as model.{key}")]
            if key == "num_classes":
                return [(f"kwargs.{key}", "comes from the data's classes; leave it out of model.kwargs")]
            if key not in allowed:
                return [(f"kwargs.{key}", f"is not a keyword of torchvision's FasterRCNN; vgg16 takes "
                                          f"{', '.join(sorted(allowed))}")]
        return []

    def _check_torchvision_arch(self) -> list[tuple[str, str]]:
        from colt_det.detectors import FAMILIES  # torchvision is imported only once a detector is asked for

        if self.arch not in FAMILIES:
            return [("arch", f"{self.arch!r} is not a supported detector; choose vgg16 or one of "
                             f"{', '.join(sorted(FAMILIES))}")]
        defaults = ModelConfig()
        for name in _VGG16_ONLY:
            if getattr(self, name) != getattr(defaults, name):
                return [(name, f"shapes the vgg16 detector only; for {self.arch} pass builder keywords in "
                               f"model.kwargs (e.g. model.kwargs.min_size)")]
        if self.pretrained_backbone not in (None, "none", "imagenet"):
            return [("pretrained_backbone", f"a local file is read for vgg16 only; for {self.arch} use imagenet "
                                            "(torchvision's weights API) or none")]
        return []

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `build_vgg16_faster_rcnn` that shape the detector (one place, so every builder
        agrees); the pretrained weights are the task's (`colt_det.pretrained`)."""
        return dict(width=self.width, head_dim=self.head_dim, head_dropout=self.head_dropout, norm=self.norm,
                    roi_pool=self.roi_pool, anchor_sizes=(tuple(self.anchor_sizes),),
                    aspect_ratios=(tuple(self.aspect_ratios),), init=self.init,
                    **{**VGG16_DEFAULT_KWARGS, **self.kwargs})

    def architecture(self, num_classes: int = len(VOC_CLASSES) + 1) -> dict[str, Any]:
        """The JSON-able description stored in tickets (`num_classes` counts the background)."""
        name = DETECTION_ARCHITECTURE if self.arch == "vgg16" else self.arch
        return {"name": name, "task": "detection", **asdict(self), "num_classes": num_classes}


# ModelConfig settings that shape the VGG16 detector only; other archs take builder keywords (model.kwargs).
_VGG16_ONLY = ("width", "head_dim", "head_dropout", "norm", "roi_pool", "anchor_sizes", "aspect_ratios", "init")

# torchvision's FasterRCNN drops detections scoring under 0.05; the vgg16 detector keeps them all unless
# model.kwargs says otherwise, since VOC and COCO AP rank every detection.
VGG16_DEFAULT_KWARGS: dict[str, Any] = {"box_score_thresh": 0.0}

def current_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """A ticket's architecture in today's keys. Tickets written before the FasterRCNN keywords moved into
    `kwargs` hold them beside the vgg16 settings: for vgg16 they move into `kwargs` (the same model is built),
    for a torchvision arch they are dropped (they never reached its builder, and validation held them at
    their defaults)."""
    moved = {key: architecture[key] for key in MOVED_TO_KWARGS if key in architecture}
    if not moved:
        return dict(architecture)
    current = {key: value for key, value in architecture.items() if key not in moved}
    if current.get("arch", "vgg16") == "vgg16":
        current["kwargs"] = {**moved, **(architecture.get("kwargs") or {})}
    return current


@dataclass
class AugmentConfig:
    """Input sizing and training augmentation (albumentations, pascal_voc boxes)."""

    resize: Literal["stretch", "keep_ratio"] = field(
        "stretch", help="stretch: every image to size x size (the paper's [600, 600]); keep_ratio: left to the "
                        "detector, which scales the shorter side to model.min_size with the longer side at most "
                        "model.max_size (py-faster-rcnn's 600/1000) and maps detections back itself")
    size: int = field(600, help="stretch: the square side of training and test images", check=at_least(16))
    hflip: float = field(0.5, help="horizontal flip probability", check=closed_interval(0.0, 1.0))
    jitter: bool = field(True, help="photometric jitter")

    @property
    def input_size(self) -> int | None:
        """The side the augmentation resizes to; None: keep the image's own size and aspect ratio."""
        return self.size if self.resize == "stretch" else None


@dataclass
class DetEvalConfig(EvalConfig):
    """Validation and test-set evaluation of detectors."""

    metric: Literal["voc07", "voc12", "coco"] = field("voc07", help="the headline metric of the report")
    coco: bool = field(True, help="also compute COCO-style mAP@[.5:.95] with pycocotools")


@dataclass
class DetRunConfig(RunConfig):
    """A COLT (or LTH) run of a detector (Faster R-CNN VGG16 or a torchvision family) on VOC or COCO-format data."""

    task: str = field("detection", help="the task this config is for: detection")
    output_dir: str = field("runs/voc_vgg16", help="run directory (--out overrides)")
    eval: DetEvalConfig = field(default_factory=DetEvalConfig, help="evaluation")
    data: DataConfig = field(default_factory=DataConfig, help="dataset")
    model: ModelConfig = field(default_factory=ModelConfig, help="detector")
    augment: AugmentConfig = field(default_factory=AugmentConfig, help="augmentation")

    @property
    def num_classes(self) -> int | None:
        """The VOC classes; None for COCO-format data, whose classes are its annotation files' categories."""
        return None if self.data.format == "coco" else len(VOC_CLASSES)
