"""`colt export`: a run's pruned weights as dense and sparse state_dicts, its ticket, sparsity tables, optionally ONNX;
for a channel ticket also the slim model (only the kept channels, physically smaller).

What is exported under which names, and how the files load elsewhere, is the run's task's (its registered
`ExportTarget`): a detection run exports its backbone keyed like its torchvision classification model and the
whole detector beside it, a classification run the model's own state_dict. Pruned weights are exactly zero.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from colt_core.cli import user_errors
from colt_core.export import (
    SOURCES,
    ExportResult,
    export_run,
    require_onnx,
    unfinished_run_architecture,
    write_onnx,
    write_slim_onnx,
)
from colt_core.rundir import open_run

EXAMPLES = """\b
Examples:
  colt export runs/voc_vgg16 --out exports/voc_vgg16
  colt export runs/voc_vgg16 --out exports/voc_vgg16_r3 --round 3 --source trained --onnx"""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_export(result: ExportResult, run_dir: Path, onnx_line: str | None, slim_onnx_line: str | None) -> None:
    """The sparsity tables, then every file written with its size, then how the files load elsewhere."""
    click.echo(result.sparsity_markdown())
    dense, sparse = result.sizes["dense"], result.sizes["sparse"]
    click.echo(f"exported round {result.round} ({result.source}) of {run_dir} to {result.out_dir}:")
    click.echo(f"  dense  {result.files['dense'].name:<28} {_size(dense):>10}")
    click.echo(f"  sparse {result.files['sparse'].name:<28} {_size(sparse):>10}  "
               f"({100 * sparse / dense:.1f}% of dense; colt_core.export.load_sparse reads it)")
    click.echo(f"  ticket {result.files['ticket'].name:<28} {_size(result.sizes['ticket']):>10}  "
               "(mask + θ0 + architecture; colt_core.prune.ticket.load_ticket reads it)")
    click.echo(f"  sparsity tables: {result.files['sparsity_md'].name}, {result.files['sparsity_json'].name}")
    if onnx_line:
        click.echo(f"  onnx   {onnx_line}")
    if result.slim is not None:
        full, slim = result.slim["parameters_full"], result.slim["parameters_slim"]
        click.echo(f"  slim   {result.files['slim'].name:<28} {_size(result.sizes['slim']):>10}  "
                   f"({slim:,} of {full:,} parameters, {100 * slim / full:.1f}%; "
                   "colt_core.export.load_slim reads it as a model)")
    if slim_onnx_line:
        click.echo(f"  onnx   {slim_onnx_line}")
    for extra in (k for k in result.files if k.endswith("_sparse") and k != "sparse"):
        stem = extra.removesuffix("_sparse")
        click.echo(f"  dense  {result.files[stem].name:<28} {_size(result.sizes[stem]):>10}")
        click.echo(f"  sparse {result.files[extra].name:<28} {_size(result.sizes[extra]):>10}")
    for line in result.target.loading_hints:
        click.echo(f"  {line}")


@click.command("export", epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--slim/--no-slim", default=None,
              help="also write slim.pt, the model with only the kept channels (default: for channel tickets)")
def export_command(run_dir: str, out: str, round_index: int | None, final: bool, source: str, with_onnx: bool,
                   onnx_size: int | None, slim: bool | None) -> None:
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
        result = export_run(run, out, round=round_index, source=source, architecture=architecture, slim=slim)
        onnx_line = write_onnx(result, onnx_size) if with_onnx else None
        slim_onnx_line = write_slim_onnx(result, onnx_size) if with_onnx else None
    _print_export(result, run.path, onnx_line, slim_onnx_line)
