"""ONNX files of exported models: tracing to a file, and checking the file in onnxruntime against PyTorch.

`onnx` (needed to write a file) and `onnxruntime` (needed to check one) are optional packages: writing without
`onnx` is one clear error, checking without `onnxruntime` is skipped and said so.
"""

from __future__ import annotations

import importlib.util
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colt_core.export.errors import ExportError
from colt_core.io import atomic_write_bytes


def require_onnx() -> None:
    """torch.onnx needs the `onnx` package; say how to get it before a slow trace fails."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the onnx package, which is not installed: pip install onnx")


def export_onnx(model: nn.Module, example_args: tuple[Any, ...], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: Mapping[str, Any] | None = None, opset: int = 17) -> Path:
    """Trace `model` (in eval mode, on the CPU) to an ONNX file, written atomically."""
    require_onnx()
    model = model.eval().cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that handles torchvision's detectors.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_args, buffer, opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dict(dynamic_axes or {}),
                          dynamo=False)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def run_onnx(path: str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """The outputs of the ONNX file in onnxruntime, or None when onnxruntime is not installed (optional)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, dict(feeds))]


def compare_outputs(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> dict[str, Any]:
    """Element-wise comparison of ONNX outputs with PyTorch's (for models whose outputs have a fixed order)."""
    diffs = []
    for out, want in zip(got, expected):
        if np.shape(out) != np.shape(want):
            diffs.append(math.inf)
        elif np.size(want):
            diffs.append(float(np.max(np.abs(np.asarray(out, np.float64) - np.asarray(want, np.float64)))))
        else:
            diffs.append(0.0)
    return {"outputs": len(got), "max_abs_diff": max(diffs, default=0.0), "shapes": [list(np.shape(o)) for o in got]}


def verify_onnx(path: str | Path, feeds: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                atol: float = 1e-3) -> dict[str, Any] | None:
    """Run the ONNX file and compare it with PyTorch element by element; None without onnxruntime.

    Raises ExportError when an output differs by more than `atol`.
    """
    got = run_onnx(path, feeds)
    if got is None:
        return None
    check = compare_outputs(got, expected)
    if not check["max_abs_diff"] <= atol:
        raise ExportError(f"{path}: onnxruntime's outputs differ from PyTorch's by up to {check['max_abs_diff']:.3g} "
                          f"(tolerance {atol:g}); the ONNX export is wrong, do not use it")
    return check
