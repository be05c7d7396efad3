"""Synthetic twins: real file structure, deterministic bytes, safe (re)generation, the CLI, learnability."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader

from colt_cls import synthetic
from colt_cls.datasets import ImageClassificationDataset, build_transforms, load_dataset
from colt_cls.models import create_model
from colt_cls.synthetic import (
    CIFAR10_LABEL_NAMES,
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR100_COARSE_OF_FINE,
    CIFAR100_FINE_LABEL_NAMES,
    MARKER_FILE,
    ensure_synthetic,
    synthetic_wnid,
    write_synthetic,
    write_synthetic_cifar,
    write_synthetic_imagenet,
    write_synthetic_tiny_imagenet,
)

REPOSITORY = Path(__file__).resolve().parents[2]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): path.read_bytes() for path in files}


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


SMALL = {
    "cifar10": {"n_train_per_class": 3, "n_test_per_class": 2},
    "cifar100": {"n_train_per_class": 1, "n_test_per_class": 1},
    "tinyimagenet": {"num_classes": 4, "n_train_per_class": 3, "n_val_per_class": 2,
                     "grayscale_fraction": 0.25},
    "imagenet": {"num_classes": 3, "n_train_per_class": 2, "n_val_per_class": 2, "image_size": 24},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_arguments_give_byte_identical_trees_and_another_seed_differs(name: str, tmp_path: Path) -> None:
    first = write_synthetic(name, tmp_path / "a", seed=4, **SMALL[name])
    second = write_synthetic(name, tmp_path / "b", seed=4, **SMALL[name])
    other = write_synthetic(name, tmp_path / "c", seed=5, **SMALL[name])
    assert tree_bytes(first) == tree_bytes(second)
    assert len(tree_bytes(first)) > 3
    assert tree_bytes(first) != tree_bytes(other)
    assert json.loads((first / MARKER_FILE).read_text())["arguments"]["seed"] == 4


def test_cifar10_files_have_the_official_pickle_structure(tmp_path: Path) -> None:
    base = write_synthetic_cifar(tmp_path, num_classes=10, n_train_per_class=4, n_test_per_class=2)
    assert base == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in base.iterdir() if p.name != MARKER_FILE) == [
        "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
        "test_batch"]
    meta = read_pickle(base / "batches.meta")
    assert meta["label_names"] == CIFAR10_LABEL_NAMES and meta["num_vis"] == 3072
    total = 0
    for number in range(1, 6):
        batch = read_pickle(base / f"data_batch_{number}")
        assert set(batch) == {"batch_label", "labels", "data", "filenames"}
        assert batch["batch_label"] == f"training batch {number} of 5"
        assert batch["data"].dtype == np.uint8 and batch["data"].shape == (len(batch["labels"]), 3072)
        assert isinstance(batch["labels"], list) and len(batch["filenames"]) == len(batch["labels"])
        total += len(batch["labels"])
    assert total == 40
    test = read_pickle(base / "test_batch")
    assert test["batch_label"] == "testing batch 1 of 1"
    assert sorted(test["labels"]) == sorted(list(range(10)) * 2)


def test_cifar100_files_have_fine_and_coarse_labels_like_the_official_ones(tmp_path: Path) -> None:
    base = write_synthetic_cifar(tmp_path, num_classes=100, n_train_per_class=1, n_test_per_class=1)
    assert base == tmp_path / "cifar-100-python"
    meta = read_pickle(base / "meta")
    assert meta["fine_label_names"] == CIFAR100_FINE_LABEL_NAMES
    assert len(set(CIFAR100_FINE_LABEL_NAMES)) == 100
    assert meta["coarse_label_names"] == CIFAR100_COARSE_LABEL_NAMES
    # Every superclass holds exactly five classes, as in CIFAR-100.
    assert np.bincount(CIFAR100_COARSE_OF_FINE).tolist() == [5] * 20
    for file, batch_label in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
        batch = read_pickle(base / file)
        assert set(batch) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
        assert batch["batch_label"] == batch_label and batch["data"].shape == (100, 3072)
        assert [CIFAR100_COARSE_OF_FINE[f] for f in batch["fine_labels"]] == batch["coarse_labels"]
    with pytest.raises(ValueError, match=r"10 .* or 100"):
        write_synthetic_cifar(tmp_path, num_classes=20)


def test_tiny_imagenet_tree_follows_the_official_layout(tmp_path: Path) -> None:
    base = write_synthetic_tiny_imagenet(tmp_path, num_classes=5, n_train_per_class=4, n_val_per_class=2,
                                         grayscale_fraction=0.25)
    wnids = [synthetic_wnid(c) for c in range(5)]
    assert sorted((base / "wnids.txt").read_text().split()) == wnids
    words = dict(line.split("\t") for line in (base / "words.txt").read_text().splitlines())
    assert set(wnids) < set(words)  # words.txt also names synsets that are not classes
    gray = 0
    for wnid in wnids:
        images = sorted((base / "train" / wnid / "images").iterdir())
        assert [p.name for p in images] == [f"{wnid}_{k}.JPEG" for k in range(4)]
        boxes = (base / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()
        assert [line.split("\t")[0] for line in boxes] == [p.name for p in images]
        for line in boxes:
            x0, y0, x1, y1 = map(int, line.split("\t")[1:])
            assert 0 <= x0 < x1 <= 63 and 0 <= y0 < y1 <= 63
        for path in images:
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.size == (64, 64) and image.mode in ("RGB", "L")
                gray += image.mode == "L"
    assert gray == 5  # a quarter of 20
    annotations = (base / "val" / "val_annotations.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in annotations] == [f"val_{k}.JPEG" for k in range(10)]
    assert sorted(line.split("\t")[1] for line in annotations) == sorted(wnids * 2)
    assert all((base / "val" / "images" / f"val_{k}.JPEG").is_file() for k in range(10))


def test_imagenet_tree_has_class_folders_in_both_splits(tmp_path: Path) -> None:
    root = write_synthetic_imagenet(tmp_path / "imagenet", num_classes=2, n_train_per_class=2,
                                    n_val_per_class=1, image_size=24)
    assert root == tmp_path / "imagenet"
    for split, per_class in (("train", 2), ("val", 1)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == [synthetic_wnid(0), synthetic_wnid(1)]
        assert all(len(list((root / split / f).glob("*.JPEG"))) == per_class for f in folders)


def test_ensure_synthetic_writes_once_and_rewrites_only_for_other_arguments(tmp_path: Path) -> None:
    path = ensure_synthetic("cifar10", tmp_path, n_train_per_class=2, n_test_per_class=1)
    marker = path / MARKER_FILE
    assert json.loads(marker.read_text()) == {"generator": "cifar", "format": 1, "arguments": {
        "num_classes": 10, "n_train_per_class": 2, "n_test_per_class": 1, "seed": 0}}
    stamp = marker.stat().st_mtime_ns, marker.stat().st_ino
    assert ensure_synthetic("cifar10", tmp_path, n_train_per_class=2, n_test_per_class=1, seed=0) == path
    assert (marker.stat().st_mtime_ns, marker.stat().st_ino) == stamp
    ensure_synthetic("cifar10", tmp_path, n_train_per_class=3, n_test_per_class=1)
    assert len(load_dataset("cifar10", tmp_path, train=True)) == 30
    # No partial or retired folders are left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-batches-py"]
    with pytest.raises(ValueError, match=r"cifar10 fixes \['num_classes'\]"):
        ensure_synthetic("cifar10", tmp_path, num_classes=100)


def test_a_real_dataset_is_never_touched(tmp_path: Path) -> None:
    real = tmp_path / "cifar-10-batches-py"
    real.mkdir()
    (real / "data_batch_1").write_bytes(b"the user's own data")
    assert ensure_synthetic("cifar10", tmp_path, n_train_per_class=1, n_test_per_class=1) == real
    with pytest.raises(FileExistsError, match="is not a synthetic dataset"):
        write_synthetic_cifar(tmp_path, n_train_per_class=1, n_test_per_class=1)
    assert sorted(p.name for p in real.iterdir()) == ["data_batch_1"]
    assert (real / "data_batch_1").read_bytes() == b"the user's own data"


def test_an_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_save_jpeg", fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic("tinyimagenet", tmp_path, num_classes=2, n_train_per_class=1, n_val_per_class=1)
    assert list(tmp_path.iterdir()) == []
    # A folder left by a killed process (no marker, never renamed into place) is not mistaken for the dataset.
    (tmp_path / ".tiny-imagenet-200.partial-killed").mkdir()
    monkeypatch.undo()
    path = ensure_synthetic("tinyimagenet", tmp_path, num_classes=2, n_train_per_class=1, n_val_per_class=1)
    assert (path / MARKER_FILE).is_file() and len(load_dataset("tinyimagenet", tmp_path, train=True)) == 2


def _cli():
    script = REPOSITORY / "tools" / "make_synthetic_cls.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_cls", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_writes_a_loadable_twin_and_rejects_options_of_other_datasets(tmp_path: Path) -> None:
    main = _cli()
    runner = CliRunner()
    result = runner.invoke(main, ["tinyimagenet", "--root", str(tmp_path), "--num-classes", "3",
                                  "--train-per-class", "2", "--test-per-class", "1", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "ready at" in result.output
    split = load_dataset("tinyimagenet", tmp_path, train=False)
    assert len(split) == 3 and split.num_classes == 3
    marker = json.loads((tmp_path / "tiny-imagenet-200" / MARKER_FILE).read_text())
    assert marker["arguments"]["seed"] == 7
    result = runner.invoke(main, ["cifar10", "--root", str(tmp_path), "--num-classes", "5"])
    assert result.exit_code == 2
    assert "--num-classes applies to tinyimagenet and imagenet only" in result.output
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "train").mkdir()
    result = runner.invoke(main, ["imagenet", "--root", str(tmp_path / "imagenet"), "--force"])
    assert result.exit_code == 1 and "refusing to overwrite" in result.output


def test_a_tiny_conv3_learns_the_cifar10_twin_in_two_epochs(cifar10_root: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model on a shared CPU is fastest on one thread
    try:
        torch.manual_seed(0)
        train = ImageClassificationDataset(load_dataset("cifar10", cifar10_root, train=True),
                                           transform=build_transforms("cifar10", train=True))
        test = ImageClassificationDataset(load_dataset("cifar10", cifar10_root, train=False),
                                          transform=build_transforms("cifar10", train=False))
        model = create_model("conv3", 10, width=0.25)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(2):
            model.train()
            for images, labels in DataLoader(train, batch_size=32, shuffle=True):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(test, batch_size=100):
                correct += (model(images).argmax(1) == labels).sum().item()
    finally:
        torch.set_num_threads(threads)
    accuracy = correct / len(test)
    # Chance is 10%; 600 images and two epochs reach about 80-90%, full training about 96%.
    assert accuracy > 0.5, accuracy
