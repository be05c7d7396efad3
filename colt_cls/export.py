"""Classifier exports: a classification ticket's model rebuilt from its architecture, its whole state_dict
exported, and its ONNX file (images in, logits out).

A classification ticket's architecture is what ``ClassificationTask.architecture()`` stores: the
``describe_architecture`` description (name, create_model kwargs, library) with ``task``, ``head``, ``dataset``
and ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_cls.models import create_model_from_description
from colt_core.export import ExportTarget, SlimTrace, export_onnx, verify_onnx


def classifier_export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """The classifier of a ticket, built from its description; its whole state_dict is exported."""
    overrides = {"num_classes": architecture["num_classes"]} if "num_classes" in architecture else {}
    model = create_model_from_description(dict(architecture), **overrides)
    head = architecture.get("head") or getattr(model, "head_name", None)
    return ExportTarget(model=model, output_layers=(head,) if head else (), stem="model",
                        description="the classifier's state_dict",
                        onnx=partial(classifier_onnx, architecture=architecture),
                        slim=SlimTrace((_example_images(architecture),)))


def _example_images(architecture: Mapping[str, Any], size: int | None = None) -> torch.Tensor:
    """One seeded image of the classifier's input (side `size`, None: its input size, 32 when it has none)."""
    channels = int((architecture.get("kwargs") or {}).get("in_chans", 3))
    side = size or int(architecture.get("input_size", 32))
    return torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(0))


def classifier_onnx(model: nn.Module, out_dir: Path, size: int | None, *,
                    architecture: Mapping[str, Any]) -> tuple[Path, str | None]:
    """The export target's ONNX hook: ``model.onnx`` (a batch of images in, logits out) traced on a seeded image
    of side `size` (None: the architecture's input size, 32 when it has none) and compared with PyTorch's logits
    in onnxruntime; the file and a line of the largest difference."""
    model = model.eval().cpu()
    example = _example_images(architecture, size)
    path = export_onnx(model, (example,), Path(out_dir) / "model.onnx", input_names=["images"],
                       output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad():
        expected = model(example).numpy()
    check = verify_onnx(path, {"images": example.numpy()}, [expected])
    if check is None:
        return path, None
    return path, f"onnxruntime: {check['outputs']} outputs, largest difference to PyTorch {check['max_abs_diff']:.2e}"
