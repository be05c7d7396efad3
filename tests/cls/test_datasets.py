"""Loaders of CIFAR-10/100, TinyImageNet and ImageNet on their synthetic twins, their errors, subsets, splits
and transforms."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from colt_cls.datasets import (
    CIFAR10_MEAN,
    ClassificationSplit,
    DatasetError,
    ImageClassificationDataset,
    build_transforms,
    load_dataset,
    subset_by_classes,
    train_val_split,
)
from colt_cls.synthetic import CIFAR10_LABEL_NAMES, CIFAR100_FINE_LABEL_NAMES, synthetic_wnid


@pytest.fixture
def torchvision_cifar_without_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision verifies the official archives' md5 sums; the twin has other bytes by design."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)


# --------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_twin_loads_with_shapes_names_and_balanced_labels(cifar10_root: Path, sizes: SimpleNamespace
                                                                  ) -> None:
    train = load_dataset("cifar10", cifar10_root, train=True)
    test = load_dataset("cifar10", cifar10_root, train=False)
    assert isinstance(train.samples, np.ndarray)
    assert train.samples.shape == (10 * sizes.cifar10_train_per_class, 32, 32, 3)
    assert train.samples.dtype == np.uint8
    assert test.samples.shape == (10 * sizes.cifar10_test_per_class, 32, 32, 3)
    assert train.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [sizes.cifar10_train_per_class] * 10
    assert train.class_names == CIFAR10_LABEL_NAMES == test.class_names
    # The dataset folder itself is accepted as root as well as its parent.
    direct = load_dataset("cifar10", cifar10_root / "cifar-10-batches-py", train=False)
    assert np.array_equal(direct.samples, test.samples)


@pytest.mark.usefixtures("torchvision_cifar_without_checksums")
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_twins_read_identically_by_torchvision(name: str, cifar10_root: Path, cifar100_root: Path
                                                     ) -> None:
    root = cifar10_root if name == "cifar10" else cifar100_root
    reader = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    for train in (True, False):
        ours = load_dataset(name, root, train=train)
        theirs = reader(str(root), train=train)
        assert np.array_equal(ours.samples, theirs.data)
        assert ours.labels.tolist() == list(theirs.targets)
        assert ours.class_names == theirs.classes


def test_cifar100_uses_fine_labels_and_names(cifar100_root: Path, sizes: SimpleNamespace) -> None:
    train = load_dataset("cifar100", cifar100_root, train=True)
    assert train.class_names == CIFAR100_FINE_LABEL_NAMES and len(train.class_names) == 100
    assert train.class_names[0] == "apple" and train.class_names[-1] == "worm"
    assert np.bincount(train.labels, minlength=100).tolist() == [sizes.cifar100_train_per_class] * 100


def _write_cifar10_with_bytes_keys(base: Path, row: np.ndarray) -> None:
    """CIFAR-10 batches as Python 2 wrote them, keys arriving as bytes (like encoding='bytes' readers see)."""
    base.mkdir(parents=True)
    for file in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(base / file, "wb") as handle:
            pickle.dump({b"data": row[None].copy(), b"labels": [3], b"batch_label": b"x"}, handle, protocol=2)
    with open(base / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES]}, handle, protocol=2)


def test_cifar_rows_are_red_then_green_then_blue_planes_row_major(tmp_path: Path) -> None:
    row = np.zeros(3072, dtype=np.uint8)
    row[0] = 255  # red plane, pixel (y=0, x=0)
    row[1024 + 1] = 200  # green plane, pixel (0, 1)
    row[2048 + 32] = 100  # blue plane, pixel (1, 0)
    _write_cifar10_with_bytes_keys(tmp_path / "cifar-10-batches-py", row)
    split = load_dataset("cifar10", tmp_path, train=False)
    image = split.samples[0]
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[0, 1].tolist() == [0, 200, 0]
    assert image[1, 0].tolist() == [0, 0, 100]
    assert split.labels.tolist() == [3] and split.class_names[3] == "cat"
    assert load_dataset("cifar10", tmp_path, train=True).samples.shape == (5, 32, 32, 3)


def _dump(path: Path, content: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def test_missing_cifar_root_names_path_layout_and_both_ways_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset("cifar10", tmp_path / "nowhere", train=True)
    message = str(caught.value)
    assert "nowhere" in message and "cifar-10-batches-py" in message and "data_batch_1" in message
    assert "cifar-10-python.tar.gz" in message
    assert "python tools/make_synthetic_cls.py cifar10 --root" in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda base: (base / "data_batch_3").unlink(), "missing file .*data_batch_3"),
        (lambda base: (base / "batches.meta").unlink(), "missing file .*batches.meta"),
        (lambda base: (base / "test_batch").write_bytes(b"this is not a pickle"),
         "test_batch is not a readable"),
        (lambda base: (base / "test_batch").write_bytes((base / "test_batch").read_bytes()[:500]),
         "test_batch is not a readable"),
        (lambda base: _dump(base / "test_batch", [1, 2, 3]), "holds a list, expected a dict"),
        (lambda base: _dump(base / "test_batch", {"data": np.zeros((4, 3000), np.uint8), "labels": [0] * 4}),
         r"expected uint8 of shape \(N, 3072\)"),
        (lambda base: _dump(base / "test_batch", {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}),
         "4 images but 'labels' has shape"),
        (lambda base: _dump(base / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}),
         r"labels span 0..10, expected 0..9"),
        (lambda base: _dump(base / "test_batch", {"data": np.zeros((2, 3072), np.uint8)}),
         r"lacks the key\(s\) \['labels'\]"),
        (lambda base: _dump(base / "batches.meta", {"label_names": ["a", "b"]}), "must list 10 class names"),
    ],
    ids=["missing-batch", "missing-meta", "garbage", "truncated", "not-a-dict", "wrong-shape",
         "label-count", "label-range", "missing-key", "meta-names"],
)
def test_damaged_cifar10_raises_one_clear_dataset_error(cifar10_root: Path, copy_of, damage, expected: str
                                                       ) -> None:
    root = copy_of(cifar10_root)
    damage(root / "cifar-10-batches-py")
    # The damaged file belongs to the test split, the train split or both: loading both must fail.
    with pytest.raises(DatasetError, match=expected) as caught:
        for train in (False, True):
            load_dataset("cifar10", root, train=train)
    assert "make_synthetic_cls.py cifar10" in str(caught.value)


def test_cifar100_missing_meta_is_reported(cifar100_root: Path, copy_of) -> None:
    root = copy_of(cifar100_root)
    (root / "cifar-100-python" / "meta").unlink()
    expected = r"missing file .*cifar-100-python.meta.*cifar-100-python\.tar\.gz"
    with pytest.raises(DatasetError, match=expected):
        load_dataset("cifar100", root, train=True)


class _RunsACommand:
    """What a hostile pickle holds: unpickling it calls `os.system` (or another callable) with its arguments."""

    def __init__(self, call: object, *args: object) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


# As a protocol-2 pickle names them (Python 2's module names where they differ).
@pytest.mark.parametrize("call, named", [(os.system, "posix.system"), (subprocess.check_call, "commands.check_call"),
                                         (eval, "__builtin__.eval")])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(cifar10_root: Path, copy_of, tmp_path: Path,
                                                                  call, named: str) -> None:
    root = copy_of(cifar10_root)
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    args = {os.system: (command,), subprocess.check_call: (["touch", str(marker)],),
            eval: (f"open({str(marker)!r}, 'w').close()",)}[call]
    batch = root / "cifar-10-batches-py" / "test_batch"
    _dump(batch, {"data": np.zeros((2, 3072), np.uint8), "labels": _RunsACommand(call, *args)})
    with pytest.raises(DatasetError) as caught:
        load_dataset("cifar10", root, train=False)
    assert not marker.exists()
    message = str(caught.value)
    assert f"{batch} is not a CIFAR batch: its pickle calls {named}, which a CIFAR batch never holds" in message
    assert "\n" not in message and "cifar-10-python.tar.gz" in message


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official batches: byte strings as str opcodes (read back with
    encoding="latin1") and numpy's array rebuilders under numpy 1's module names."""

    def save_bytes(self, obj: bytes) -> None:
        size = len(obj)
        opcode = pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size)
        self.write(opcode + obj)
        self.memoize(obj)

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = pickle.whichmodule(obj, obj.__name__).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)

    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, bytes: save_bytes}


def test_python2_batches_with_byte_string_keys_still_load(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    names = [name.encode("ascii") for name in CIFAR10_LABEL_NAMES]
    batches = {}
    for file in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data, labels = rng.integers(0, 256, (3, 3072), dtype=np.uint8), rng.integers(0, 10, 3).tolist()
        batches[file] = data, labels
        content = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                   b"filenames": [b"a.png", b"b.png", b"c.png"]}
        with open(base / file, "wb") as handle:
            _Python2Pickler(handle, protocol=2).dump(content)
    with open(base / "batches.meta", "wb") as handle:
        _Python2Pickler(handle, protocol=2).dump({b"label_names": names, b"num_vis": 3072})
    assert b"numpy.core.multiarray\n_reconstruct" in (base / "test_batch").read_bytes()
    test = load_dataset("cifar10", tmp_path, train=False)
    data, labels = batches["test_batch"]
    assert test.class_names == list(CIFAR10_LABEL_NAMES) and test.labels.tolist() == labels
    assert np.array_equal(test.samples, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert len(load_dataset("cifar10", tmp_path, train=True).labels) == 15


# -------------------------------------------------------------------------------------- TinyImageNet


def test_tiny_imagenet_train_labels_follow_class_folders(tiny_imagenet_root: Path, sizes: SimpleNamespace
                                                          ) -> None:
    train = load_dataset("tinyimagenet", tiny_imagenet_root, train=True)
    wnids = sorted(synthetic_wnid(c) for c in range(sizes.tiny_classes))
    assert train.class_names == [f"synthetic_{c:03d}" for c in range(sizes.tiny_classes)]  # from words.txt
    assert len(train) == sizes.tiny_classes * sizes.tiny_train_per_class
    for path, label in zip(train.samples, train.labels, strict=True):
        assert Path(path).parts[-3] == wnids[label] and Path(path).parent.name == "images"


def test_tiny_imagenet_val_labels_come_from_val_annotations(tiny_imagenet_root: Path, sizes: SimpleNamespace
                                                            ) -> None:
    val = load_dataset("tinyimagenet", tiny_imagenet_root, train=False)
    base = tiny_imagenet_root / "tiny-imagenet-200"
    wnids = sorted((base / "wnids.txt").read_text().split())
    lines = (base / "val" / "val_annotations.txt").read_text().splitlines()
    annotated = dict(line.split("\t")[:2] for line in lines)
    assert len(val) == len(annotated) == sizes.tiny_classes * sizes.tiny_val_per_class
    for path, label in zip(val.samples, val.labels, strict=True):
        assert Path(path).parent == base / "val" / "images"
        assert annotated[Path(path).name] == wnids[label]
    assert np.bincount(val.labels).tolist() == [sizes.tiny_val_per_class] * sizes.tiny_classes


def test_tiny_imagenet_grayscale_jpeg_becomes_rgb(tiny_imagenet_root: Path) -> None:
    for train in (True, False):
        split = load_dataset("tinyimagenet", tiny_imagenet_root, train=train)
        modes = []
        for path in split.samples:
            with Image.open(path) as image:
                modes.append(image.mode)
        gray = modes.index("L")  # the twin stores some images as grayscale, like the real dataset
        image = split.load_image(gray)
        assert image.mode == "RGB" and image.size == (64, 64)
        dataset = ImageClassificationDataset(split, transform=build_transforms("tinyimagenet", train))
        tensor, label = dataset[gray]
        assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
        assert label == split.labels[gray]


def _replace_line(path: Path, index: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "train", "expected"),
    [
        (lambda base: _replace_line(base / "val" / "val_annotations.txt", 1, "val_1.JPEG n12345678 0 0 9 9"),
         False, r"val_annotations.txt line 2: wnid 'n12345678' is not listed in .*wnids.txt"),
        (lambda base: _replace_line(base / "val" / "val_annotations.txt", 0, "val_0.JPEG"),
         False, "val_annotations.txt line 1: expected"),
        (lambda base: (base / "val" / "images" / "val_2.JPEG").unlink(),
         False, r"line 3: image .*val_2.JPEG does not exist"),
        (lambda base: (base / "val" / "val_annotations.txt").unlink(), False,
         "missing file .*val_annotations.txt"),
        (lambda base: (base / "wnids.txt").unlink(), True, "missing file .*wnids.txt"),
        (lambda base: shutil.rmtree(base / "train" / synthetic_wnid(2)), True,
         f"missing folder .*{synthetic_wnid(2)}.images for wnid"),
        (lambda base: (base / "wnids.txt").write_text("n1\nn1\n"), True, "must list distinct wnids"),
    ],
    ids=["unknown-wnid", "short-line", "missing-val-image", "no-annotations", "no-wnids", "no-class-folder",
         "duplicate-wnids"],
)
def test_damaged_tiny_imagenet_raises_one_clear_dataset_error(tiny_imagenet_root: Path, copy_of, damage,
                                                              train: bool, expected: str) -> None:
    root = copy_of(tiny_imagenet_root)
    damage(root / "tiny-imagenet-200")
    with pytest.raises(DatasetError, match=expected) as caught:
        load_dataset("tinyimagenet", root, train=train)
    message = str(caught.value)
    assert "tiny-imagenet-200.zip" in message and "make_synthetic_cls.py tinyimagenet" in message


# ------------------------------------------------------------------------------------------ ImageNet


def test_imagenet_folders_match_torchvision_image_folder(imagenet_root: Path, sizes: SimpleNamespace) -> None:
    per_class = {"train": sizes.imagenet_train_per_class, "val": sizes.imagenet_val_per_class}
    for split_name in ("train", "val"):
        ours = load_dataset("imagenet", imagenet_root, train=split_name == "train")
        theirs = torchvision.datasets.ImageFolder(str(imagenet_root / split_name))
        assert ours.class_names == theirs.classes
        assert ours.samples == [path for path, _ in theirs.samples]
        assert ours.labels.tolist() == theirs.targets
        assert len(ours) == sizes.imagenet_classes * per_class[split_name]


def test_imagenet_images_of_any_shape_come_out_at_crop_size(imagenet_root: Path) -> None:
    split = load_dataset("imagenet", imagenet_root, train=False)
    sizes = {split.load_image(i).size for i in range(len(split))}
    assert len(sizes) > 1  # the twin varies size and aspect ratio, like real ImageNet
    for train in (True, False):
        transform = build_transforms("imagenet", train, image_size=32)
        dataset = ImageClassificationDataset(split, transform=transform)
        assert all(dataset[i][0].shape == (3, 32, 32) for i in range(len(dataset)))


def test_imagenet_flat_val_folder_asks_for_class_folders(imagenet_root: Path, copy_of) -> None:
    root = copy_of(imagenet_root)
    val = root / "val"
    for image in list(val.rglob("*.JPEG")):
        image.rename(val / image.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(DatasetError, match="holds images directly instead of one folder per wnid"):
        load_dataset("imagenet", root, train=False)


def test_imagenet_val_class_unknown_to_train_and_missing_train_are_reported(imagenet_root: Path, copy_of
                                                                           ) -> None:
    root = copy_of(imagenet_root)
    (root / "val" / "n00000001").mkdir()
    with pytest.raises(DatasetError, match=r"class folders \['n00000001'\] that .*train lacks"):
        load_dataset("imagenet", root, train=False)
    shutil.rmtree(root / "train")
    with pytest.raises(DatasetError, match=r"folder .*train does not exist.*ILSVRC2012"):
        load_dataset("imagenet", root, train=True)


def test_unknown_dataset_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar10, cifar100, tinyimagenet, imagenet"):
        load_dataset("mnist", tmp_path, train=True)


# ----------------------------------------------------------------------------- subsets, splits, dataset


def test_subset_by_classes_keeps_group_samples_and_maps_labels_to_group_positions() -> None:
    labels = np.array([0, 1, 2, 3, 1, 2, 0])
    indices, label_map = subset_by_classes(labels, [2, 0])
    assert indices.tolist() == [0, 2, 5, 6] and indices.dtype == np.int64
    assert label_map == {2: 0, 0: 1}
    with pytest.raises(ValueError, match="duplicates"):
        subset_by_classes(labels, [1, 1])
    with pytest.raises(ValueError, match="empty"):
        subset_by_classes(labels, [])


def test_dataset_over_a_class_subset_yields_remapped_labels(cifar10_root: Path, sizes: SimpleNamespace
                                                            ) -> None:
    split = load_dataset("cifar10", cifar10_root, train=False)
    indices, label_map = subset_by_classes(split, [7, 2, 9])
    dataset = ImageClassificationDataset(split, indices, build_transforms("cifar10", train=False), label_map)
    assert len(dataset) == 3 * sizes.cifar10_test_per_class
    assert dataset.num_classes == 3 and dataset.class_names == ["horse", "bird", "truck"]
    assert sorted(set(dataset.labels.tolist())) == [0, 1, 2]
    for position in (0, len(dataset) - 1):
        image, label = dataset[position]
        original = int(split.labels[indices[position]])
        assert label == label_map[original]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    with pytest.raises(ValueError, match=r"class ids must lie in 0\.\.9"):
        subset_by_classes(split, [3, 10])


def test_dataset_rejects_a_label_map_missing_subset_classes_and_bad_indices(cifar10_root: Path) -> None:
    split = load_dataset("cifar10", cifar10_root, train=False)
    indices, _ = subset_by_classes(split, [1, 2])
    with pytest.raises(ValueError, match=r"no entry for class ids \[2\]"):
        ImageClassificationDataset(split, indices, label_map={1: 0})
    with pytest.raises(IndexError):
        ImageClassificationDataset(split, [0, len(split)])
    whole = ImageClassificationDataset(split)
    assert len(whole) == len(split) and whole.num_classes == 10
    image, label = whole[5]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == split.labels[5]


def test_split_validates_samples_against_labels() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ClassificationSplit(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2), ["a"])
    with pytest.raises(ValueError, match="2 samples but labels"):
        ClassificationSplit(["a.png", "b.png"], np.zeros(3), ["a"])
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        ClassificationSplit(["a.png", "b.png"], np.array([0, 2]), ["a", "b"])


def test_train_val_split_is_stratified_disjoint_complete_and_seeded() -> None:
    counts = np.arange(10, 20)
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(10), counts))
    train_idx, val_idx = train_val_split(labels, 0.2, seed=3)
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(labels)))
    expected_val = np.floor(counts * 0.2 + 0.5).astype(int)
    assert np.bincount(labels[val_idx], minlength=10).tolist() == expected_val.tolist()
    again_train, again_val = train_val_split(labels, 0.2, seed=3)
    assert np.array_equal(again_train, train_idx) and np.array_equal(again_val, val_idx)
    assert not np.array_equal(train_val_split(labels, 0.2, seed=4)[1], val_idx)


def test_train_val_split_edge_cases() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    train_idx, val_idx = train_val_split(labels, 0.1, seed=0)
    # Classes of two or more samples give one to val even when the fraction rounds to zero; one sample stays.
    assert sorted(labels[val_idx].tolist()) == [0, 2]
    assert 3 in train_idx.tolist()
    assert train_val_split(labels, 0.0, seed=0)[1].size == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(labels, bad, seed=0)


# ------------------------------------------------------------------------------------------ transforms


@pytest.mark.parametrize(("name", "size"), [("cifar10", 32), ("cifar100", 32), ("tinyimagenet", 64),
                                            ("imagenet", 224)])
def test_transforms_give_normalised_tensors_and_reproduce_under_torch_seed(name: str, size: int) -> None:
    # CIFAR and TinyImageNet images always have the native size; ImageNet's vary.
    shape = (size + 13, size + 5, 3) if name == "imagenet" else (size, size, 3)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    evaluation = build_transforms(name, train=False)
    assert evaluation(image).shape == (3, size, size)
    assert torch.equal(evaluation(image), evaluation(image))
    augment = build_transforms(name, train=True)
    torch.manual_seed(11)
    first = augment(image)
    torch.manual_seed(11)
    assert torch.equal(first, augment(image))
    assert first.shape == (3, size, size) and first.dtype == torch.float32
    assert any(not torch.equal(first, augment(image)) for _ in range(5))


def test_cifar_normalisation_centres_the_dataset_mean_and_resizing_scales_padding() -> None:
    mean_colour = np.array(CIFAR10_MEAN) * 255
    image = Image.fromarray(np.broadcast_to(np.round(mean_colour).astype(np.uint8), (32, 32, 3)).copy())
    assert build_transforms("cifar10", train=False)(image).abs().max() < 0.01
    augment = build_transforms("cifar10", train=True, image_size=64)
    assert augment(image).shape == (3, 64, 64)
    padding = next(step for step in augment.transforms if type(step).__name__ == "RandomCrop").padding
    assert list(padding) == [8, 8, 8, 8]
    with pytest.raises(ValueError, match="unknown dataset"):
        build_transforms("svhn", train=True)
