"""Pretrained weights the torchvision way, and a record of which weights a run started from.

`model.pretrained_backbone: imagenet` resolves to torchvision's own weights enum for the backbone (for
vgg16 `VGG16_Weights.IMAGENET1K_V1`, or `VGG16_BN_Weights.IMAGENET1K_V1` with `model.norm: batch`; for a
torchvision detector its builder's default `weights_backbone`), and `model.pretrained: coco` to the
detector's COCO-trained weights. torchvision's weights API keeps files in torch.hub's cache
(`$TORCH_HOME/hub/checkpoints`): a file already there needs no network; otherwise torchvision downloads it,
and where that fails the run stops before any work with one line naming the file, the folder to put it in
and the alternatives. For vgg16 a `PATH` is a local state_dict in torchvision's format. Either way the
file's SHA-256 is recorded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torchvision.models import VGG16_BN_Weights, VGG16_Weights
from torchvision.models._api import WeightsEnum

from colt_core.config import ConfigError
from colt_core.distributed import DistContext, run_on_main
from colt_core.io import load_checkpoint
from colt_det.detectors import coco_weights, default_backbone_weights

IMAGENET = "imagenet"
NONE = "none"
IMAGENET_WEIGHTS = {"none": VGG16_Weights.IMAGENET1K_V1, "batch": VGG16_BN_Weights.IMAGENET1K_V1}


class PretrainedWeightsError(ConfigError):
    """Pretrained weights the config asks for cannot be had (not cached, no network, damaged, not the pinned)."""


@dataclass(frozen=True)
class PretrainedWeights:
    """The weights a run starts from: what was asked for, the file, its SHA-256, and the enum (torchvision's
    builders load it) or the state (the vgg16 builder takes it)."""

    source: str  # e.g. "VGG16_Weights.IMAGENET1K_V1", or the path given
    file: Path
    sha256: str
    state: Mapping[str, torch.Tensor] = field(repr=False, compare=False, default_factory=dict)
    weights: WeightsEnum | None = field(default=None, compare=False)
    detector: bool = False  # the whole detector's weights (model.pretrained: coco), not only its backbone

    def describe(self) -> str:
        return f"{self.source} ({self.file.name}, SHA-256 {self.sha256})"


def weights_name(weights: WeightsEnum) -> str:
    return f"{type(weights).__name__}.{weights.name}"


def imagenet_weights(norm: str) -> WeightsEnum:
    """torchvision's ImageNet weights for the VGG16 backbone with this norm layer."""
    if norm not in IMAGENET_WEIGHTS:
        raise ConfigError(f"model.pretrained_backbone: torchvision has no ImageNet VGG16 with {norm} norm layers; "
                          "use model.norm: none (vgg16) or batch (vgg16_bn), or a local file as PATH")
    return IMAGENET_WEIGHTS[norm]


def cache_file(weights: WeightsEnum) -> Path:
    """Where torch.hub's cache keeps a weights file: $TORCH_HOME/hub/checkpoints/<the URL's file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(weights: WeightsEnum, key: str = "model.pretrained_backbone: imagenet") -> Path:
    """The cached file of `weights`, downloaded by torchvision's weights API when it is not cached yet."""
    path = cache_file(weights)
    if path.is_file():
        return path
    try:
        weights.get_state_dict(progress=True, check_hash=True, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        alternative = ("or pass a local copy as model.pretrained_backbone: PATH"
                       if isinstance(weights, (VGG16_Weights, VGG16_BN_Weights)) else "or set it to none")
        raise PretrainedWeightsError(
            f"{key} needs torchvision's {weights_name(weights)}, the file {path.name}, which is not in torch.hub's "
            f"cache ({path.parent}) and could not be downloaded ({type(exc).__name__}: {first}); put the file "
            f"there (from {weights.url}) {alternative}") from None
    return path


def resolve_pretrained(model: Any, *, dist: DistContext | None = None) -> PretrainedWeights | None:
    """The weights a `model:` config section asks for (None when none): fetched, hashed, checked against
    `model.pretrained_sha256` when it is set, and for vgg16 read.

    Rank 0 downloads what is missing, once; every rank then reads the file.
    """
    if model.arch != "vgg16":
        return _resolve_torchvision(model, dist)
    source = model.pretrained_backbone
    if source in (None, NONE):
        return None
    if source == IMAGENET:
        weights = imagenet_weights(model.norm)
        path, name = run_on_main(dist, fetch_weights, weights), weights_name(weights)
        fix = f"delete {path} so that torchvision downloads it again"
    else:
        weights, path, name = None, Path(source).expanduser(), str(source)
        if not path.is_file():
            raise PretrainedWeightsError(f"model.pretrained_backbone: {path}: no such file; pass a torchvision-format "
                                         "state_dict (e.g. vgg16-397923af.pth), imagenet, or none")
        fix = "pass a torchvision-format state_dict, imagenet, or none"
    sha256 = _checked_sha256(path, model.pretrained_sha256)
    state = load_checkpoint(path, fix=f"model.pretrained_backbone: {fix}")
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"model.pretrained_backbone: {path} does not hold a state_dict; {fix}")
    return PretrainedWeights(source=name, file=path, sha256=sha256, state=dict(state), weights=weights)


def _resolve_torchvision(model: Any, dist: DistContext | None) -> PretrainedWeights | None:
    if model.pretrained == "coco":
        weights, key, detector = coco_weights(model.arch), "model.pretrained: coco", True
    elif model.pretrained_backbone == IMAGENET:
        weights, key, detector = default_backbone_weights(model.arch), "model.pretrained_backbone: imagenet", False
        if weights is None:
            raise PretrainedWeightsError(f"model.pretrained_backbone: {model.arch} has no ImageNet backbone in "
                                         "torchvision; set it to none")
    else:
        return None
    path = run_on_main(dist, fetch_weights, weights, key)
    return PretrainedWeights(source=weights_name(weights), file=path,
                             sha256=_checked_sha256(path, model.pretrained_sha256), weights=weights,
                             detector=detector)


def _checked_sha256(path: Path, pinned: str | None) -> str:
    sha256 = _sha256(path)  # torchvision checks a download's hash; like it, a cached file is taken as it is
    if pinned is not None and pinned != sha256:
        raise PretrainedWeightsError(f"model.pretrained_sha256: the run is pinned to weights with SHA-256 {pinned}, "
                                     f"but {path} has {sha256}; pass the pinned file, or start a new run")
    return sha256


def record(weights: PretrainedWeights | None) -> dict[str, Any] | None:
    """What ticket files and reports keep of the weights a run started from."""
    if weights is None:
        return None
    return {"source": weights.source, "file": weights.file.name, "sha256": weights.sha256,
            "of": "detector" if weights.detector else "backbone"}
