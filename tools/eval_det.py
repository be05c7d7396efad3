"""Evaluate detections: per-class AP on Pascal VOC (VOC07 11-point, VOC12 area, or COCO-style), or per-category
COCO AP of a COCO results file.

From official results files:
    python tools/eval_det.py --voc-root DIR --year 2007 --image-set test --results DIR --metric voc07 --out FILE.json
From a checkpoint (runs inference, on the GPU when there is one; writes results files to --results if given):
    python tools/eval_det.py --voc-root DIR --checkpoint RUN/round_03/eval/model.pt [--run RUN] --metric voc12
From a COCO results file (AP@[.5:.95], AP50, AP75 and per-category AP through pycocotools):
    python tools/eval_det.py --coco-annotations instances_val2017.json --results detections.json --out FILE.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core.cli import user_errors  # noqa: E402
from colt_core.config import from_dict, read_yaml  # noqa: E402
from colt_core.io import CheckpointError, atomic_write_json, load_checkpoint  # noqa: E402
from colt_core.rundir import RunDir, RunDirError  # noqa: E402
from colt_det.voc import load_voc_records  # noqa: E402
from colt_det.voc_eval import (  # noqa: E402
    METRICS,
    evaluate_detections,
    format_per_class_table,
    read_results_files,
    write_results_files,
)


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
def main(voc_root: str | None, coco_annotations: str | None, year: str, image_set: str, results: str | None,
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


if __name__ == "__main__":
    main()
