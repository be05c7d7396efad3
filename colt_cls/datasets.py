"""Image classification datasets read from local disk in their official layouts; nothing is downloaded.

CIFAR-10/100 come from their python-pickle batches, TinyImageNet from the unpacked `tiny-imagenet-200`
folder as distributed, ImageNet from `train/<wnid>/` and `val/<wnid>/` class folders. Every loader returns a
`ClassificationSplit`; `ImageClassificationDataset` turns a split (or a class subset of it) into a torch
dataset.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from colt_core.errors import UserError

DATASET_NAMES = ("cifar10", "cifar100", "tinyimagenet", "imagenet")
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
TINY_IMAGENET_DIR = "tiny-imagenet-200"
CIFAR_IMAGE_VALUES = 3 * 32 * 32

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISATION = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "tinyimagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
NATIVE_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "tinyimagenet": 64, "imagenet": 224}

_DISPLAY_NAME = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "TinyImageNet",
                 "imagenet": "ImageNet"}
_LAYOUT = {
    "cifar10": f"<root>/{CIFAR10_DIR}/{{data_batch_1..data_batch_5, test_batch, batches.meta}}",
    "cifar100": f"<root>/{CIFAR100_DIR}/{{train, test, meta}}",
    "tinyimagenet": (f"<root>/{TINY_IMAGENET_DIR}/{{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
                     "val/images/*.JPEG, val/val_annotations.txt}"),
    "imagenet": "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG",
}
_OFFICIAL_SOURCE = {
    "cifar10": "unpack the official cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
               "there",
    "cifar100": "unpack the official cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
                "there",
    "tinyimagenet": ("unzip the official tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip)"
                     " there as is"),
    "imagenet": ("extract the ILSVRC2012 train and val archives there with one folder per wnid in both "
                 "(sort val into class folders, e.g. with the valprep.sh of the PyTorch ImageNet example)"),
}


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing or malformed; the message names the path, the expected layout, the fix."""


def dataset_error(name: str, root: Path | str, problem: str) -> DatasetError:
    """The one-line error for dataset `name` under `root`: the problem, the layout, how to get the data."""
    return DatasetError(
        f"{_DISPLAY_NAME[name]} at {root}: {problem}. Expected layout: {_LAYOUT[name]}. To fix: "
        f"{_OFFICIAL_SOURCE[name]}, or write a synthetic twin with "
        f"`python tools/make_synthetic_cls.py {name} --root {root}`."
    )


@dataclass(eq=False)
class ClassificationSplit:
    """One split of a dataset in memory: images (a uint8 N×H×W×3 array, or a list of file paths as str),
    int64 labels indexing `class_names`."""

    samples: np.ndarray | list[str]
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if isinstance(self.samples, np.ndarray):
            if self.samples.dtype != np.uint8 or self.samples.ndim != 4 or self.samples.shape[3] != 3:
                raise ValueError(f"image array must be uint8 N×H×W×3, got {self.samples.dtype} "
                                 f"{self.samples.shape}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.samples):
            raise ValueError(f"{len(self.samples)} samples but labels of shape {self.labels.shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}, got "
                             f"{self.labels.min()}..{self.labels.max()}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, index: int) -> Image.Image:
        """Return sample `index` as an RGB PIL image (grayscale, palette, CMYK, RGBA files are converted)."""
        if isinstance(self.samples, np.ndarray):
            return Image.fromarray(self.samples[index])
        path = self.samples[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as exc:
            raise DatasetError(f"cannot read image {path}: {exc}. Replace or remove the file.") from exc


class ImageClassificationDataset(Dataset):
    """A torch dataset over a split: optional subset `indices`, optional `label_map` (old -> new label)."""

    def __init__(
        self,
        split: ClassificationSplit,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        label_map: dict[int, int] | None = None,
    ) -> None:
        self.split = split
        self.indices = (np.arange(len(split), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64).reshape(-1))
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(split)):
            raise IndexError(f"indices must lie in 0..{len(split) - 1}, got "
                             f"{self.indices.min()}..{self.indices.max()}")
        self.transform = transform
        self.label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        original = split.labels[self.indices]
        if self.label_map is None:
            self.labels = original.copy()
        else:
            unmapped = sorted(set(np.unique(original).tolist()) - set(self.label_map))
            if unmapped:
                raise ValueError(f"label_map has no entry for class ids {unmapped[:10]} present in the "
                                 "subset; select the subset with subset_by_classes")
            lookup = np.full(split.num_classes, -1, dtype=np.int64)
            for old, new in self.label_map.items():
                if 0 <= old < split.num_classes:
                    lookup[old] = new
            self.labels = lookup[original]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[Any, int]:
        image = self.split.load_image(int(self.indices[item]))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[item])

    def summary(self) -> dict[str, int]:
        """Images and classes of this dataset (what a training records about its data)."""
        return {"images": len(self), "classes": self.num_classes}

    @property
    def num_classes(self) -> int:
        """Number of outputs a model for this dataset needs."""
        if self.label_map is None:
            return self.split.num_classes
        return max(self.label_map.values()) + 1

    @property
    def class_names(self) -> list[str]:
        """Class names in the order of this dataset's (possibly remapped) labels."""
        if self.label_map is None:
            return list(self.split.class_names)
        names = [""] * self.num_classes
        for old, new in self.label_map.items():
            names[new] = self.split.class_names[old]
        return names


def subset_by_classes(
    split_or_labels: ClassificationSplit | np.ndarray | Sequence[int], class_ids: Iterable[int]
) -> tuple[np.ndarray, dict[int, int]]:
    """Indices of the samples whose label is in `class_ids`, and the map class_id -> its position there.

    This is the partition rule: a partition holds its classes' samples with labels remapped to 0..|group|-1.
    """
    is_split = isinstance(split_or_labels, ClassificationSplit)
    labels = split_or_labels.labels if is_split else np.asarray(split_or_labels, dtype=np.int64)
    class_ids = [int(c) for c in class_ids]
    if not class_ids:
        raise ValueError("class_ids is empty")
    if len(set(class_ids)) != len(class_ids):
        raise ValueError(f"class_ids contains duplicates: {class_ids}")
    if is_split and (min(class_ids) < 0 or max(class_ids) >= split_or_labels.num_classes):
        raise ValueError(f"class ids must lie in 0..{split_or_labels.num_classes - 1}, got {class_ids}")
    indices = np.flatnonzero(np.isin(labels, class_ids)).astype(np.int64)
    return indices, {class_id: position for position, class_id in enumerate(class_ids)}


def train_val_split(
    labels: np.ndarray | Sequence[int], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of sample indices into (train, val); each class keeps ~val_fraction in val.

    The validation slice is taken from the training data, so the test set only serves reported accuracy.
    Every class with at least two samples keeps one in each part when 0 < val_fraction < 1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, counts = np.unique(labels, return_counts=True)
    val_parts = []
    for members in np.split(order, np.cumsum(counts)[:-1]):
        n_val = int(np.floor(len(members) * val_fraction + 0.5))
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val_idx, assume_unique=True)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def load_dataset(name: str, root: str | os.PathLike[str], train: bool) -> ClassificationSplit:
    """Load the train (or test; TinyImageNet and ImageNet: val) split of dataset `name` from `root`.

    `root` is the folder that holds the dataset folder (as torchvision expects) or the dataset folder itself.
    """
    root = Path(root).expanduser()
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, train)
    if name == "tinyimagenet":
        return _load_tiny_imagenet(root, train)
    if name == "imagenet":
        return _load_imagenet(root, train)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def _resolve_dataset_dir(root: Path, folder: str, probe: str) -> Path:
    """The dataset folder: `root/folder`, or `root` itself when it already is that folder."""
    if not (root / folder).is_dir() and (root / probe).exists():
        return root
    return root / folder


def _cifar_pickle_globals() -> dict[tuple[str, str], Any]:
    """Everything a CIFAR batch's pickle may name: numpy arrays, their dtypes and scalars, and how they are
    rebuilt (under numpy 1's module names, which the official Python 2 pickles use, and numpy 2's), and the
    bytes of a protocol-2 pickle (`_codecs.encode`). Lists, dicts, strings and numbers need no name."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


CIFAR_PICKLE_GLOBALS = _cifar_pickle_globals()


class NotACifarBatch(pickle.UnpicklingError):
    """A pickle names something a CIFAR batch never holds."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR batches hold: a pickle that would call anything else (such as
    `os.system`, which any pickle may ask for) is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return CIFAR_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise NotACifarBatch(f"{module}.{name}") from None


def _read_cifar_pickle(name: str, root: Path, path: Path) -> dict[str, Any]:
    """Unpickle one CIFAR file (Python 2 pickles: latin1 strings) with `_CifarUnpickler`; keys come back as str."""
    if not path.is_file():
        raise dataset_error(name, root, f"missing file {path}")
    try:
        with open(path, "rb") as handle:
            entry = _CifarUnpickler(handle, encoding="latin1").load()
    except NotACifarBatch as exc:
        raise dataset_error(name, root, f"{path} is not a CIFAR batch: its pickle calls {exc}, which a CIFAR batch "
                            "never holds (and which could run code), so it was not read") from None
    except Exception as exc:  # a truncated or foreign file fails in many ways inside pickle
        raise dataset_error(name, root, f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
                            ) from exc
    if not isinstance(entry, dict):
        raise dataset_error(name, root, f"{path} holds a {type(entry).__name__}, expected a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}


def _cifar_batch(name: str, root: Path, path: Path, label_key: str, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    entry = _read_cifar_pickle(name, root, path)
    missing = [key for key in ("data", label_key) if key not in entry]
    if missing:
        raise dataset_error(name, root, f"{path} lacks the key(s) {missing}; found {sorted(entry)}")
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_VALUES:
        raise dataset_error(name, root, f"{path}: 'data' is {data.dtype} of shape {data.shape}, expected "
                            f"uint8 of shape (N, {CIFAR_IMAGE_VALUES})")
    try:
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise dataset_error(name, root, f"{path}: '{label_key}' is not a list of integers") from exc
    if labels.shape != (len(data),):
        raise dataset_error(name, root, f"{path}: {len(data)} images but '{label_key}' has shape "
                            f"{labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise dataset_error(name, root, f"{path}: labels span {labels.min()}..{labels.max()}, expected "
                            f"0..{num_classes - 1}")
    # Rows hold the red plane, then green, then blue, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar(name: str, root: Path, train: bool) -> ClassificationSplit:
    if name == "cifar10":
        base = _resolve_dataset_dir(root, CIFAR10_DIR, "batches.meta")
        files = [f"data_batch_{k}" for k in range(1, 6)] if train else ["test_batch"]
        meta_file, names_key, label_key, num_classes = "batches.meta", "label_names", "labels", 10
    else:
        base = _resolve_dataset_dir(root, CIFAR100_DIR, "meta")
        files = ["train"] if train else ["test"]
        meta_file, names_key, label_key, num_classes = "meta", "fine_label_names", "fine_labels", 100
    if not base.is_dir():
        raise dataset_error(name, root, f"folder {base} does not exist")
    meta = _read_cifar_pickle(name, root, base / meta_file)
    class_names = meta.get(names_key)
    if not isinstance(class_names, list) or len(class_names) != num_classes:
        raise dataset_error(name, root, f"{base / meta_file}: '{names_key}' must list {num_classes} class "
                            "names")
    class_names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in class_names]
    batches = [_cifar_batch(name, root, base / file, label_key, num_classes) for file in files]
    images = np.ascontiguousarray(np.concatenate([images for images, _ in batches]))
    labels = np.concatenate([labels for _, labels in batches])
    return ClassificationSplit(samples=images, labels=labels, class_names=class_names)


def _list_images(folder: str | Path) -> list[str]:
    """Image files directly inside `folder`, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted(entry.path for entry in entries
                      if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)


def _tiny_imagenet_class_names(words_path: Path, wnids: list[str]) -> list[str]:
    """First synonym of each wnid from words.txt (the wnid where words.txt lacks it), made unique."""
    words: dict[str, str] = {}
    if words_path.is_file():
        for line in words_path.read_text(encoding="utf-8").splitlines():
            wnid, _, description = line.partition("\t")
            if description:
                words[wnid.strip()] = description.split(",")[0].strip()
    names = [words.get(wnid, wnid) for wnid in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids, strict=True)]


def _load_tiny_imagenet(root: Path, train: bool) -> ClassificationSplit:
    name = "tinyimagenet"
    base = _resolve_dataset_dir(root, TINY_IMAGENET_DIR, "wnids.txt")
    wnids_path = base / "wnids.txt"
    if not wnids_path.is_file():
        raise dataset_error(name, root, f"missing file {wnids_path}")
    listed = [line.strip() for line in wnids_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not listed or len(set(listed)) != len(listed):
        raise dataset_error(name, root, f"{wnids_path} must list distinct wnids, one per line")
    wnids = sorted(listed)  # label order of torchvision's ImageFolder over train/
    class_index = {wnid: label for label, wnid in enumerate(wnids)}
    class_names = _tiny_imagenet_class_names(base / "words.txt", wnids)

    samples: list[str] = []
    labels: list[int] = []
    if train:
        for wnid in wnids:
            folder = base / "train" / wnid / "images"
            if not folder.is_dir():
                raise dataset_error(name, root, f"missing folder {folder} for wnid {wnid} listed in "
                                    "wnids.txt")
            files = _list_images(folder)
            if not files:
                raise dataset_error(name, root, f"no images in {folder}")
            samples += files
            labels += [class_index[wnid]] * len(files)
    else:
        annotations = base / "val" / "val_annotations.txt"
        image_dir = base / "val" / "images"
        if not annotations.is_file():
            raise dataset_error(name, root, f"missing file {annotations}")
        if not image_dir.is_dir():
            raise dataset_error(name, root, f"missing folder {image_dir}")
        present = set(os.listdir(image_dir))
        for line_number, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise dataset_error(name, root, f"{annotations} line {line_number}: expected "
                                    f"'<file> <wnid> <x0> <y0> <x1> <y1>', got {line!r}")
            file_name, wnid = fields[0], fields[1]
            if wnid not in class_index:
                raise dataset_error(name, root, f"{annotations} line {line_number}: wnid {wnid!r} is not "
                                    f"listed in {wnids_path}")
            if file_name not in present:
                raise dataset_error(name, root, f"{annotations} line {line_number}: image "
                                    f"{image_dir / file_name} does not exist")
            samples.append(str(image_dir / file_name))
            labels.append(class_index[wnid])
        if not samples:
            raise dataset_error(name, root, f"{annotations} lists no images")
    return ClassificationSplit(samples, np.asarray(labels, dtype=np.int64), class_names)


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))


def _load_imagenet(root: Path, train: bool) -> ClassificationSplit:
    name = "imagenet"
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise dataset_error(name, root, f"folder {train_dir} does not exist")
    wnids = _subfolders(train_dir)  # the train folders fix the label order for both splits
    if not wnids:
        raise dataset_error(name, root, f"{train_dir} holds no class folders")
    split_dir = train_dir if train else root / "val"
    if not split_dir.is_dir():
        raise dataset_error(name, root, f"folder {split_dir} does not exist")
    split_wnids = _subfolders(split_dir)
    if not split_wnids:
        if _list_images(split_dir):
            raise dataset_error(name, root, f"{split_dir} holds images directly instead of one folder per "
                                "wnid; sort them into class folders")
        raise dataset_error(name, root, f"{split_dir} holds no class folders")
    unknown = sorted(set(split_wnids) - set(wnids))
    if unknown:
        raise dataset_error(name, root, f"{split_dir} has class folders {unknown[:5]} that {train_dir} lacks")
    samples: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        folder = split_dir / wnid
        files = _list_images(folder) if folder.is_dir() else []
        if train and not files:
            raise dataset_error(name, root, f"no images in {folder}")
        samples += files
        labels += [label] * len(files)
    if not samples:
        raise dataset_error(name, root, f"no images under {split_dir}")
    return ClassificationSplit(samples, np.asarray(labels, dtype=np.int64), wnids)


def build_transforms(name: str, train: bool, image_size: int | None = None, hflip: bool = True) -> v2.Compose:
    """The paper's augmentation (train) or evaluation preprocessing for dataset `name`, ending in a
    normalised float tensor. Random choices draw from torch's global RNG, so seeding torch reproduces them.

    CIFAR: random crop with 4-pixel padding + horizontal flip; TinyImageNet: the same at 64 pixels;
    ImageNet: RandomResizedCrop + flip for training, Resize(256/224 of the size) + CenterCrop for evaluation.
    `image_size` resizes CIFAR/TinyImageNet first (padding scales along) or sets the ImageNet crop size;
    `hflip=False` leaves out the flips (for classes a flip changes, such as digits).
    """
    if name not in NORMALISATION:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    native = NATIVE_IMAGE_SIZE[name]
    size = native if image_size is None else int(image_size)
    if size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    mean, std = NORMALISATION[name]
    if name == "imagenet":
        steps: list[Any] = ([v2.RandomResizedCrop(size), *([v2.RandomHorizontalFlip()] if hflip else [])] if train
                            else [v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size)])
    else:
        steps = [] if size == native else [v2.Resize((size, size))]
        if train:
            steps += [v2.RandomCrop(size, padding=4 * size // native), *([v2.RandomHorizontalFlip()] if hflip else [])]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
