"""The detection front end's commands: `colt eval` (per-class AP of detections on Pascal VOC, or COCO AP of a
COCO results file) and `colt make-data voc|coco` (the synthetic VOCdevkit or its COCO twin)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from colt_core.cli import user_errors
from colt_core.config import from_dict, read_yaml
from colt_core.io import CheckpointError, atomic_write_json, load_checkpoint
from colt_core.rundir import RunDir, RunDirError
from colt_det.coco import load_coco
from colt_det.data import DetectionDataError, DetectionDataset
from colt_det.metrics import METRICS, evaluate_detections
from colt_det.synthetic import (
    COCO_SPLITS,
    coco_instances_path,
    ensure_synthetic_coco,
    ensure_synthetic_voc,
    make_synthetic_coco,
    make_synthetic_voc,
)
from colt_det.voc import VOC_CLASSES, load_voc_records
from colt_det.voc_eval import format_per_class_table, read_results_files, write_results_files

EVAL_EXAMPLES = """\b
Examples:
  From official results files:
    colt eval --voc-root DIR --year 2007 --image-set test --results DIR --metric voc07 --out FILE.json
  From a checkpoint (runs inference, on the GPU when there is one; writes results files to --results if given):
    colt eval --voc-root DIR --checkpoint RUN/round_03/eval/model.pt [--run RUN] --metric voc12
  From a COCO results file (AP@[.5:.95], AP50, AP75 and per-category AP through pycocotools):
    colt eval --coco-annotations instances_val2017.json --results detections.json --out FILE.json
"""


# ----- colt eval ---------------------------------------------------------------------------------------
def _run_dir_of(checkpoint: Path) -> RunDir:
    for parent in checkpoint.resolve().parents:
        if RunDir(parent).config.is_file():
            return RunDir(parent)
    raise RunDirError(f"{checkpoint}: not inside a run directory (no config.yaml above it); pass --run RUN_DIR "
                      "so the detector can be built as in that run")


def _detections_from_checkpoint(checkpoint: Path, run: Path | None, records: list, device: str) -> dict:
    import torch

    from colt_core.runtime import pick_device
    from colt_core.train.speed import resolve_precision
    from colt_det.config import DetRunConfig
    from colt_det.export import build_detector
    from colt_det.predict import detect
    from colt_det.voc import VOC_CLASSES

    run_dir = RunDir(run) if run is not None else _run_dir_of(checkpoint)
    cfg = from_dict(DetRunConfig, read_yaml(run_dir.config))
    if cfg.data.format != "voc":
        raise click.UsageError(f"{run_dir} trained on COCO-format data: evaluate its round's eval/detections.json "
                               "with --coco-annotations FILE --results FILE")
    # The weights come from the checkpoint, so the weights the run started from are not needed here.
    model = build_detector(cfg.model.architecture(len(VOC_CLASSES) + 1))
    state = load_checkpoint(checkpoint)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{checkpoint}: does not fit the 21-way detector of {run_dir.config} ({first}); "
                              "partition models have fewer outputs: use a round's eval/model.pt") from None
    dev = pick_device(device)
    with torch.no_grad():
        return detect(model, records, size=cfg.augment.input_size, device=dev,
                      amp=resolve_precision(dev, cfg.train.amp), batch_size=cfg.eval.batch_size)


@click.command(name="eval", context_settings={"help_option_names": ["-h", "--help"]}, epilog=EVAL_EXAMPLES)
@click.option("--voc-root", type=click.Path(), help="folder holding VOCdevkit/ (or VOCdevkit itself)")
@click.option("--coco-annotations", type=click.Path(dir_okay=False),
              help="a COCO instances JSON: evaluate the COCO results file --results against it")
@click.option("--year", default="2007", show_default=True, help="VOC year of the evaluated image set")
@click.option("--image-set", default="test", show_default=True, help="image set under ImageSets/Main")
@click.option("--results", type=click.Path(), help="folder of comp4_det_test_<class>.txt files (read, or written "
              "when --checkpoint is given); with --coco-annotations a COCO results JSON")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="a trained 21-way detector state_dict")
@click.option("--run", type=click.Path(file_okay=False), help="run directory whose config built the checkpoint")
@click.option("--metric", type=click.Choice(METRICS), help="VOC data: voc07 (default), voc12 or coco; COCO data: coco")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(dir_okay=False), help="write {metric, mAP, per_class} JSON here")
def eval_command(voc_root: str | None, coco_annotations: str | None, year: str, image_set: str, results: str | None,
         checkpoint: str | None, run: str | None, metric: str | None, device: str, out: str | None) -> None:
    """Per-class AP of detections on a VOC image set or a COCO dataset, printed as a table and optionally saved
    as JSON."""
    if (voc_root is None) == (coco_annotations is None):
        raise click.UsageError("give --voc-root DIR (Pascal VOC) or --coco-annotations FILE (COCO), not both")
    if coco_annotations is not None:
        if checkpoint is not None or results is None:
            raise click.UsageError("with --coco-annotations give --results FILE, a COCO results JSON "
                                   "(--checkpoint needs --voc-root)")
        if metric not in (None, "coco"):
            raise click.UsageError(f"--metric {metric}: COCO data is evaluated with the coco metric only")
        from colt_det.coco_eval import evaluate_coco_results, format_coco_table  # pycocotools only when asked for

        with user_errors():
            result = evaluate_coco_results(coco_annotations, results)
        click.echo(format_coco_table(result))
        if out is not None:
            atomic_write_json(result, out)
            click.echo(f"written {out}")
        return
    metric = metric or "voc07"
    if results is None and checkpoint is None:
        raise click.UsageError("give --results DIR (results files) or --checkpoint FILE (run inference)")
    with user_errors():
        records, _ = load_voc_records(voc_root, [(year, image_set)])
        if checkpoint is not None:
            detections = _detections_from_checkpoint(Path(checkpoint), Path(run) if run else None, records, device)
            if results is not None:
                write_results_files(results, detections)
        else:
            detections = read_results_files(results)
        result = evaluate_detections(detections, records, metric)
    summary = {"metric": metric, "mAP": result["mAP"], "per_class": result["per_class"]}
    for key in ("AP50", "AP75"):
        if key in result:
            summary[key] = result[key]
    click.echo(format_per_class_table(result))
    if out is not None:
        atomic_write_json(summary, out)
        click.echo(f"written {out}")


# ----- colt make-data voc|coco -------------------------------------------------------------------------
GENERATORS = {"voc": (make_synthetic_voc, ensure_synthetic_voc), "coco": (make_synthetic_coco, ensure_synthetic_coco)}
OUT_HELP = {"voc": "Folder to hold VOCdevkit/; created if missing.",
            "coco": "The COCO twin's root (train/, test/, annotations/); created if missing."}


def write_synthetic_detection(data_format: str, out_root: Path, force: bool, **params: Any) -> None:
    """Generate the synthetic VOC under OUT/VOCdevkit (or its COCO twin under OUT) and print what it holds."""
    make, ensure = GENERATORS[data_format]
    try:
        root = make(out_root, **params) if force else ensure(out_root, **params)
    except (DetectionDataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if data_format == "coco":
        click.echo(f"synthetic COCO at {root}")
        for split in COCO_SPLITS:
            records, categories, _ = load_coco([(root / split, coco_instances_path(root, split))])
            summary = DetectionDataset(records, classes=categories.names).summary()
            click.echo(f"  {split:<9} {summary['images']:5d} images {summary['objects']:6d} objects "
                       f"({coco_instances_path(root, split)})")
        return
    click.echo(f"synthetic VOC at {root}")
    for image_set in ("train", "val", "trainval", "test"):
        records, _ = load_voc_records(root, f"2007:{image_set}")
        summary = DetectionDataset(records, classes=VOC_CLASSES).summary()
        click.echo(f"  2007:{image_set:<9} {summary['images']:5d} images {summary['objects']:6d} objects "
                   f"({summary['difficult']} difficult)")


def generator_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The generator's own options (everything but --out and --format)."""
    options = [
        click.option("--seed", default=0, show_default=True, help="Random seed; same arguments give identical files."),
        click.option("--image-size", default=128, show_default=True, help="Side of the square images in pixels."),
        click.option("--n-trainval", default=400, show_default=True, help="Images in trainval (split into train/val)."),
        click.option("--n-test", default=200, show_default=True, help="Images in test."),
        click.option("--min-objects", default=1, show_default=True, help="Fewest objects per image."),
        click.option("--max-objects", default=3, show_default=True, help="Most objects per image."),
        click.option("--difficult-fraction", default=0.05, show_default=True,
                     help="Share of objects drawn small and marked difficult."),
        click.option("--val-fraction", default=0.5, show_default=True, help="Share of trainval listed in val.txt."),
        click.option("--force", is_flag=True, help="Regenerate even when identical synthetic data is already there."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_data_command(data_format: str) -> click.Command:
    """`colt make-data voc` or `colt make-data coco`: one format's synthetic dataset."""
    what = "a synthetic Pascal VOC (VOCdevkit/VOC2007 with JPEGs, XML and image sets)" if data_format == "voc" else \
        "a synthetic COCO-format dataset (train/, test/ and annotations/instances_{train,test}.json)"

    @click.command(name=data_format, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"Write {what} for demos and tests.\n\n\b\nExample:\n  colt make-data {data_format} "
                        f"--out data/synthetic_{data_format} --seed 0")
    @click.option("--out", "out_root", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help=OUT_HELP[data_format])
    @generator_options
    def command(out_root: Path, force: bool, **params: Any) -> None:
        write_synthetic_detection(data_format, out_root, force, **params)

    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="\b\nExamples:\n  python tools/make_synthetic_voc.py --out data/synthetic_voc --seed 0\n"
                      "  python tools/make_synthetic_voc.py --format coco --out data/synthetic_coco --seed 0")
@click.option("--out", "out_root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to hold VOCdevkit/ (voc), or the COCO twin's root (coco); created if missing.")
@click.option("--format", "data_format", type=click.Choice(["voc", "coco"]), default="voc", show_default=True,
              help="On-disk format: a VOCdevkit, or COCO instances JSON files and image folders.")
@generator_options
def make_synthetic_command(out_root: Path, data_format: str, force: bool, **params: Any) -> None:
    """Generate the synthetic VOC under OUT/VOCdevkit (or its COCO twin under OUT) and print what it holds."""
    write_synthetic_detection(data_format, out_root, force, **params)
