"""Write a small synthetic Pascal VOC (VOCdevkit/VOC2007 with JPEGs, XML and image sets) for demos and tests,
or its COCO twin (the same images and objects: train/, test/ and annotations/instances_{train,test}.json).

Example:
    python tools/make_synthetic_voc.py --out data/synthetic_voc --seed 0
    python tools/make_synthetic_voc.py --format coco --out data/synthetic_coco --seed 0
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

# Runnable as `python tools/make_synthetic_voc.py` from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colt_det.coco import load_coco
from colt_det.data import DetectionDataError, DetectionDataset
from colt_det.synthetic import (
    COCO_SPLITS,
    coco_instances_path,
    ensure_synthetic_coco,
    ensure_synthetic_voc,
    make_synthetic_coco,
    make_synthetic_voc,
)
from colt_det.voc import VOC_CLASSES, load_voc_records

GENERATORS = {"voc": (make_synthetic_voc, ensure_synthetic_voc), "coco": (make_synthetic_coco, ensure_synthetic_coco)}

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out_root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to hold VOCdevkit/ (voc), or the COCO twin's root (coco); created if missing.",
)
@click.option(
    "--format", "data_format", type=click.Choice(["voc", "coco"]), default="voc", show_default=True,
    help="On-disk format: a VOCdevkit, or COCO instances JSON files and image folders.",
)
@click.option(
    "--seed", default=0, show_default=True, help="Random seed; same arguments give identical files."
)
@click.option("--image-size", default=128, show_default=True, help="Side of the square images in pixels.")
@click.option(
    "--n-trainval", default=400, show_default=True, help="Images in trainval (split into train/val)."
)
@click.option("--n-test", default=200, show_default=True, help="Images in test.")
@click.option("--min-objects", default=1, show_default=True, help="Fewest objects per image.")
@click.option("--max-objects", default=3, show_default=True, help="Most objects per image.")
@click.option(
    "--difficult-fraction",
    default=0.05,
    show_default=True,
    help="Share of objects drawn small and marked difficult.",
)
@click.option("--val-fraction", default=0.5, show_default=True, help="Share of trainval listed in val.txt.")
@click.option(
    "--force", is_flag=True, help="Regenerate even when identical synthetic data is already there."
)
def main(out_root: Path, data_format: str, force: bool, **params: object) -> None:
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
        click.echo(
            f"  2007:{image_set:<9} {summary['images']:5d} images {summary['objects']:6d} objects "
            f"({summary['difficult']} difficult)"
        )


if __name__ == "__main__":
    main()
