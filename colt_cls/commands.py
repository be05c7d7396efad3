"""The classifier front end's commands: `colt make-data cifar10|cifar100|tinyimagenet|imagenet`, a small
synthetic twin of the dataset in its real on-disk format.

CIFAR lands in <root>/cifar-10-batches-py or <root>/cifar-100-python, TinyImageNet in <root>/tiny-imagenet-200,
ImageNet directly in <root> (train/<wnid>/, val/<wnid>/). An identical twin already there is kept; a real
dataset there is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from colt_cls.synthetic import MARKER_FILE, ensure_synthetic, write_synthetic

DATASETS = ("cifar10", "cifar100", "tinyimagenet", "imagenet")
# Options that only some generators take: (option name, datasets that accept it).
_ONLY_FOR = {"num_classes": ("tinyimagenet", "imagenet"), "image_size": ("imagenet",),
             "grayscale_fraction": ("tinyimagenet", "imagenet")}


def write_synthetic_classification(dataset: str, root: Path, train_per_class: int | None,
                                   test_per_class: int | None, seed: int, force: bool, **given: Any) -> None:
    """Write the synthetic twin of `dataset` under `root` (options it does not take are refused)."""
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


def _options(datasets: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The generator options, those that only some datasets take only where one of `datasets` takes them."""
    def takes(option: str) -> bool:
        return any(d in _ONLY_FOR[option] for d in datasets)

    options = [
        click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Folder to write into (the folder you later pass to the loader as the dataset root)."),
        click.option("--train-per-class", type=click.IntRange(min=1), default=None,
                     help="Training images per class [default: 500 CIFAR, 50 TinyImageNet/ImageNet]."),
        click.option("--test-per-class", type=click.IntRange(min=1), default=None,
                     help="Test (CIFAR) or val (TinyImageNet/ImageNet) images per class [default: 100 CIFAR, "
                          "10 TinyImageNet/ImageNet]."),
        takes("num_classes") and click.option(
            "--num-classes", type=click.IntRange(min=2), default=None,
            help="Number of classes, TinyImageNet/ImageNet only [default: 200 TinyImageNet, 10 ImageNet]."),
        takes("image_size") and click.option("--image-size", type=click.IntRange(min=16), default=None,
                                             help="Typical image side in pixels, ImageNet only [default: 128]."),
        takes("grayscale_fraction") and click.option(
            "--grayscale-fraction", type=click.FloatRange(0.0, 1.0), default=None,
            help="Share of images stored as grayscale JPEGs, TinyImageNet/ImageNet only [default: 0.05]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed; equal arguments give equal files."),
        click.option("--force", is_flag=True, help="Rewrite even when an identical synthetic twin is already there."),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([o for o in options if o]):
            command = option(command)
        return command

    return decorate


def make_data_command(dataset: str) -> click.Command:
    """`colt make-data DATASET`: the synthetic twin of one classification dataset."""
    @click.command(name=dataset, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"Write a small synthetic twin of {dataset} in its real on-disk format.\n\n\b\nExample:\n"
                        f"  colt make-data {dataset} --root data")
    @_options((dataset,))
    def command(root: Path, train_per_class: int | None, test_per_class: int | None, seed: int, force: bool,
                **given: Any) -> None:
        write_synthetic_classification(dataset, root, train_per_class, test_per_class, seed, force, **given)

    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="\b\nExamples:\n  python tools/make_synthetic_cls.py cifar10 --root data\n"
                      "  python tools/make_synthetic_cls.py tinyimagenet --root data --num-classes 10 "
                      "--train-per-class 100")
@click.argument("dataset", type=click.Choice(DATASETS))
@_options(DATASETS)
def make_synthetic_command(dataset: str, root: Path, train_per_class: int | None, test_per_class: int | None,
                           seed: int, force: bool, **given: Any) -> None:
    """Write the synthetic twin of DATASET under --root."""
    write_synthetic_classification(dataset, root, train_per_class, test_per_class, seed, force, **given)
