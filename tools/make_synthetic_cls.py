"""Write a small synthetic twin of CIFAR-10, CIFAR-100, TinyImageNet or ImageNet in the real on-disk format.

    python tools/make_synthetic_cls.py cifar10 --root data
    python tools/make_synthetic_cls.py tinyimagenet --root data --num-classes 10 --train-per-class 100

CIFAR lands in <root>/cifar-10-batches-py or <root>/cifar-100-python, TinyImageNet in
<root>/tiny-imagenet-200, ImageNet directly in <root> (train/<wnid>/, val/<wnid>/). An identical twin
already there is kept; a real dataset there is never overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from colt_cls.synthetic import MARKER_FILE, ensure_synthetic, write_synthetic

# Options that only some generators take: (option name, datasets that accept it).
_ONLY_FOR = {"num_classes": ("tinyimagenet", "imagenet"), "image_size": ("imagenet",),
             "grayscale_fraction": ("tinyimagenet", "imagenet")}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", type=click.Choice(["cifar10", "cifar100", "tinyimagenet", "imagenet"]))
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into (the folder you later pass to the loader as the dataset root).")
@click.option("--train-per-class", type=click.IntRange(min=1), default=None,
              help="Training images per class [default: 500 CIFAR, 50 TinyImageNet/ImageNet].")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None,
              help="Test (CIFAR) or val (TinyImageNet/ImageNet) images per class [default: 100 CIFAR, "
                   "10 TinyImageNet/ImageNet].")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="Number of classes, TinyImageNet/ImageNet only [default: 200 TinyImageNet, 10 ImageNet].")
@click.option("--image-size", type=click.IntRange(min=16), default=None,
              help="Typical image side in pixels, ImageNet only [default: 128].")
@click.option("--grayscale-fraction", type=click.FloatRange(0.0, 1.0), default=None,
              help="Share of images stored as grayscale JPEGs, TinyImageNet/ImageNet only [default: 0.05].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; equal arguments give equal files.")
@click.option("--force", is_flag=True, help="Rewrite even when an identical synthetic twin is already there.")
def main(dataset: str, root: Path, train_per_class: int | None, test_per_class: int | None,
         num_classes: int | None, image_size: int | None, grayscale_fraction: float | None, seed: int,
         force: bool) -> None:
    """Write the synthetic twin of DATASET under --root."""
    given = {"num_classes": num_classes, "image_size": image_size, "grayscale_fraction": grayscale_fraction}
    for option, value in given.items():
        if value is not None and dataset not in _ONLY_FOR[option]:
            accepted = " and ".join(_ONLY_FOR[option])
            raise click.UsageError(f"--{option.replace('_', '-')} applies to {accepted} only, not {dataset}")
    arguments = {key: value for key, value in given.items() if value is not None}
    arguments["seed"] = seed
    if train_per_class is not None:
        arguments["n_train_per_class"] = train_per_class
    if test_per_class is not None:
        arguments["n_test_per_class" if dataset.startswith("cifar") else "n_val_per_class"] = test_per_class
    try:
        path = (write_synthetic if force else ensure_synthetic)(dataset, root, **arguments)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if (path / MARKER_FILE).is_file():
        click.echo(f"{dataset} synthetic twin ready at {path}")
    else:
        click.echo(f"{path} already holds a {dataset} dataset that is not synthetic; left untouched")


if __name__ == "__main__":
    main()
