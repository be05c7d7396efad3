"""Export a run's pruned weights: dense and sparse state_dicts, the ticket, a sparsity table, optionally ONNX.

    python tools/export_backbone.py RUN_DIR --out DIR [--round N | --final] [--source ticket|trained] [--onnx]

Detection runs export the VGG16 backbone keyed like ``torchvision.models.vgg16().features`` (at width 1.0,
``torchvision.models.vgg16().features.load_state_dict(torch.load(DIR / "vgg16_backbone.pth"))`` works;
``vgg16_bn`` for ``model.norm: batch``);
classifier runs export the model's own state_dict. Pruned weights are exactly zero in both.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core.cli import user_errors  # noqa: E402
from colt_core.config import ConfigError, read_yaml  # noqa: E402
from colt_core.export import (  # noqa: E402
    SOURCES,
    ExportError,
    ExportResult,
    ExportTarget,
    export_onnx,
    export_run,
    require_onnx,
    verify_onnx,
)
from colt_core.io import read_json  # noqa: E402
from colt_core.rundir import RunDir, open_run  # noqa: E402


def classifier_export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """The classifier of a ticket, built by the classifier front end; its whole state_dict is exported."""
    try:
        from colt_cls.models import create_model_from_description
    except ImportError as exc:
        raise ExportError(f"this run holds a classifier ticket, but the classifier front end cannot be "
                          f"imported (colt_cls.models.create_model_from_description: {exc}); run from a "
                          "checkout that has colt_cls") from None
    overrides = {"num_classes": architecture["num_classes"]} if "num_classes" in architecture else {}
    model = create_model_from_description(dict(architecture), **overrides)
    head = architecture.get("head") or getattr(model, "head_name", None)
    return ExportTarget(model=model, output_layers=(head,) if head else (), stem="model",
                        description="the classifier's state_dict")


def make_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """The front end's export target for a ticket architecture (detection or classification)."""
    from colt_det.export import detection_export_target, is_detection_architecture

    if is_detection_architecture(architecture):
        return detection_export_target(architecture)
    if architecture.get("task") == "classification":
        return classifier_export_target(architecture)
    raise ExportError(f"architecture {architecture.get('name')!r} (task {architecture.get('task')!r}) is "
                      "neither a detection nor a classification model; nothing here can rebuild it")


def unfinished_run_architecture(run: RunDir) -> dict[str, Any]:
    """The architecture of a run that has no ticket.pt yet, from its stored config (detection runs)."""
    from colt_det.export import architecture_from_config

    run_dir = run.path
    try:
        classes = len(read_json(run.split)["class_names"]) if run.split.is_file() else None
        config = read_yaml(run.config)
        return architecture_from_config(config, classes + 1) if classes else architecture_from_config(config)
    except ConfigError as exc:
        raise ExportError(f"{run_dir}: the run is unfinished (no ticket.pt) and its config.yaml is not a "
                          f"detection config ({exc}); finish the run with --resume, then export it") from None


def export_onnx_file(result: ExportResult, architecture: Mapping[str, Any], size: int | None) -> str:
    """ONNX of the pruned detector or classifier beside the other files; a line saying what was checked."""
    from colt_det.export import export_detector_onnx, is_detection_architecture, onnx_image_size

    if is_detection_architecture(architecture):
        path, check = export_detector_onnx(result.model, result.out_dir / "detector.onnx",
                                           size or onnx_image_size(architecture))
    else:
        import torch

        channels = int((architecture.get("kwargs") or {}).get("in_chans", 3))
        side = size or int(architecture.get("input_size", 32))
        model = result.model.eval().cpu()
        example = torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(0))
        path = export_onnx(model, (example,), result.out_dir / "model.onnx", input_names=["images"],
                           output_names=["logits"],
                           dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        with torch.no_grad():
            expected = model(example).numpy()
        check = verify_onnx(path, {"images": example.numpy()}, [expected])
    result.files["onnx"] = path
    result.sizes["onnx"] = path.stat().st_size
    if check is None:
        return f"{path} (not run: onnxruntime is not installed)"
    if "detections" in check:
        return (f"{path} (onnxruntime: {check['matched']} of {check['detections']} detections matched to "
                f"PyTorch's by label, largest box difference {check['max_box_diff']:.2e} px, largest score "
                f"difference {check['max_score_diff']:.2e})")
    return (f"{path} (onnxruntime: {check['outputs']} outputs, largest difference to PyTorch "
            f"{check['max_abs_diff']:.2e})")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for the exported files")
@click.option("--round", "round_index", type=int, default=None,
              help="export this round's ticket (default: the final one)")
@click.option("--final", is_flag=True, help="export the run's final ticket (the default)")
@click.option("--source", type=click.Choice(SOURCES), default="ticket", show_default=True,
              help="ticket: mask ⊙ θ0 (for retraining); trained: the round's trained full-data model")
@click.option("--onnx", "with_onnx", is_flag=True,
              help="also export the pruned model to ONNX (needs `pip install onnx`)")
@click.option("--onnx-size", type=int, default=None,
              help="example input side for ONNX tracing (default: the detector min_size; classifiers 32)")
def main(run_dir: str, out: str, round_index: int | None, final: bool, source: str, with_onnx: bool,
         onnx_size: int | None) -> None:
    """Export the pruned weights of RUN_DIR (a chosen round, or the final ticket) into --out."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if final and round_index is not None:
        raise click.UsageError("--round and --final exclude each other")
    with user_errors():
        if with_onnx:
            require_onnx()  # before the export, not after it
        run = open_run(run_dir)
        architecture = None
        if round_index is not None and not run.is_finished():
            architecture = unfinished_run_architecture(run)
        result = export_run(run, out, make_target, round=round_index, source=source, architecture=architecture)
        arch = result.architecture
        onnx_line = export_onnx_file(result, arch, onnx_size) if with_onnx else None
    click.echo(result.sparsity_markdown())
    dense, sparse = result.sizes["dense"], result.sizes["sparse"]
    click.echo(f"exported round {result.round} ({result.source}) of {run.path} to {result.out_dir}:")
    click.echo(f"  dense  {result.files['dense'].name:<28} {_size(dense):>10}")
    click.echo(f"  sparse {result.files['sparse'].name:<28} {_size(sparse):>10}  "
               f"({100 * sparse / dense:.1f}% of dense; colt_core.export.load_sparse reads it)")
    click.echo(f"  ticket {result.files['ticket'].name:<28} {_size(result.sizes['ticket']):>10}  "
               "(mask + θ0 + architecture; colt_core.prune.ticket.load_ticket reads it)")
    click.echo(f"  sparsity tables: {result.files['sparsity_md'].name}, {result.files['sparsity_json'].name}")
    if onnx_line:
        click.echo(f"  onnx   {onnx_line}")
    from colt_det.export import is_detection_architecture, loading_hint

    if is_detection_architecture(arch):
        for extra in (k for k in result.files if k.endswith("_sparse") and k != "sparse"):
            stem = extra.removesuffix("_sparse")
            click.echo(f"  dense  {result.files[stem].name:<28} {_size(result.sizes[stem]):>10}")
            click.echo(f"  sparse {result.files[extra].name:<28} {_size(result.sizes[extra]):>10}")
        for line in loading_hint(arch):
            click.echo(f"  {line}")

if __name__ == "__main__":
    main()
