"""Small synthetic twins of CIFAR-10/100, TinyImageNet and ImageNet, written in the real on-disk formats so
that the real loaders are what runs in demos and tests.

Each class is a textured colour disc: its hue, the kind of texture on it (vertical or horizontal stripes,
a diamond check, concentric rings; all unchanged by a horizontal flip, so augmentation keeps the class) and
the texture's period are fixed per class; position, size, phase, exact colour, background, a plain
distractor disc and pixel noise vary per sample. A small CNN learns it in a minute on a CPU, but not in
one step. Output is a deterministic function of the arguments (byte-identical on the same platform and
library versions). Every tree is built in a hidden folder beside the target, with a marker file written
last, and renamed into place, so an interrupted generation never looks complete.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from colt_cls.datasets import CIFAR10_DIR, CIFAR100_DIR, TINY_IMAGENET_DIR
from colt_core.io import staged_directory

MARKER_FILE = ".colt_synthetic.json"
MARKER_FORMAT = 1

CIFAR10_LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CIFAR100_FINE_LABEL_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]
CIFAR100_COARSE_LABEL_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]
# Superclass of each fine label, as in the official CIFAR-100 files.
CIFAR100_COARSE_OF_FINE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7,
    6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16,
    12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]

_HUES, _TEXTURES = 8, 4
_RENDER_CHUNK = 256
_TRAIN_STREAM, _TEST_STREAM, _LAYOUT_STREAM = 0, 1, 2


def synthetic_wnid(class_id: int) -> str:
    """WordNet-style id of synthetic class `class_id`; ids sort in class order."""
    return f"n{90000000 + class_id:08d}"


def render_pattern_images(
    labels: np.ndarray, num_classes: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image per label: uint8 N×size×size×3 images and each main disc's box (x0, y0, x1, y1)."""
    labels = np.asarray(labels, dtype=np.int64)
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    boxes = np.empty((len(labels), 4), dtype=np.int64)
    for start in range(0, len(labels), _RENDER_CHUNK):
        chunk = slice(start, start + _RENDER_CHUNK)
        images[chunk], boxes[chunk] = _render_chunk(labels[chunk], num_classes, size, rng)
    return images, boxes


def _class_attributes(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (turns), texture kind (0..3) and texture period (fraction of the image side) of each label's class.

    Hue changes fastest with the class id, then texture, then period, so with 10 classes two pairs share a
    hue and differ only in texture, and with more classes texture and period matter more.
    """
    hues = min(num_classes, _HUES)
    periods = -(-num_classes // (hues * _TEXTURES))
    hue = (labels % hues) / hues
    texture = (labels // hues) % _TEXTURES
    period_level = labels // (hues * _TEXTURES)
    # Periods spaced geometrically between 1/9 and 1/2.5 of the image side.
    period = (1 / 9) * (9 / 2.5) ** (period_level / max(periods - 1, 1))
    return hue, texture, period


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    return value[:, None] - value[:, None] * saturation[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _disc(ys: np.ndarray, xs: np.ndarray, centre: np.ndarray, radius: np.ndarray, size: int) -> np.ndarray:
    """Soft-edged disc masks, N×size×size."""
    distance = np.sqrt((ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2)
    return 1.0 / (1.0 + np.exp((distance - radius[:, None, None]) / (size / 48)))


def _render_chunk(labels: np.ndarray, num_classes: int, size: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    n = len(labels)
    hue, texture, period = _class_attributes(labels, num_classes)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    ys, xs = ys[None], xs[None]

    # Background: a random grey-ish tint with a linear ramp in a random direction.
    base = rng.uniform(0.15, 0.6, size=(n, 1)) + rng.uniform(-0.12, 0.12, size=(n, 3))
    ramp_angle = rng.uniform(0, 2 * np.pi, size=n)
    ramp = (np.cos(ramp_angle)[:, None, None] * xs + np.sin(ramp_angle)[:, None, None] * ys) / size - 0.5
    image = base[:, None, None, :] + 0.2 * ramp[..., None]

    # Distractor: a plain disc of any hue, so the mean colour alone does not give the class away.
    distractor_centre = rng.uniform(0.1 * size, 0.9 * size, size=(n, 2))
    distractor_radius = rng.uniform(0.1, 0.2, size=n) * size
    distractor_colour = _hsv_to_rgb(rng.uniform(0, 1, size=n), rng.uniform(0.4, 1.0, size=n),
                                    rng.uniform(0.4, 1.0, size=n))
    mask = _disc(ys, xs, distractor_centre, distractor_radius, size)[..., None]
    image = image * (1 - mask) + distractor_colour[:, None, None, :] * mask

    # The class pattern: a disc near the centre, coloured by the class hue, carrying the class texture.
    centre = size / 2 + rng.uniform(-size / 7, size / 7, size=(n, 2))
    radius = rng.uniform(0.22, 0.34, size=n) * size
    tilt = rng.normal(0, np.deg2rad(5), size=n)[:, None, None]
    wavelength = (period * size * rng.uniform(0.92, 1.08, size=n))[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(2, n))[:, :, None, None]

    def wave(direction: np.ndarray | float, offset: np.ndarray) -> np.ndarray:
        along = np.cos(direction + tilt) * xs + np.sin(direction + tilt) * ys
        return np.sin(2 * np.pi * along / wavelength + offset)

    rings = np.sqrt((ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2)
    textures = np.stack([
        wave(0.0, phase[0]),  # vertical stripes
        wave(np.pi / 2, phase[0]),  # horizontal stripes
        wave(np.pi / 4, phase[0]) * wave(-np.pi / 4, phase[1]),  # diamond check
        np.sin(2 * np.pi * rings / wavelength + phase[0]),  # concentric rings
    ])
    grating = 0.5 + 0.5 * textures[texture, np.arange(n)]
    # Hue jitter of a fifth of the spacing between class hues: neighbours come close but rarely overlap.
    colour = _hsv_to_rgb((hue + rng.normal(0, 0.025, size=n)) % 1.0, rng.uniform(0.4, 1.0, size=n),
                         rng.uniform(0.6, 1.0, size=n))
    pattern = colour[:, None, None, :] * (0.4 + 0.6 * grating[..., None])
    mask = _disc(ys, xs, centre, radius, size)[..., None]
    image = image * (1 - mask) + pattern * mask

    image = image + rng.normal(0, 0.08, size=image.shape)
    images = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    corners = np.concatenate([centre[:, ::-1] - radius[:, None], centre[:, ::-1] + radius[:, None]], axis=1)
    boxes = np.clip(np.rint(corners), 0, size - 1).astype(np.int64)
    return images, boxes


def _balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return rng.permutation(labels) if shuffle else labels


def _marker(generator: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"generator": generator, "arguments": arguments, "format": MARKER_FORMAT}


@contextmanager
def _build_tree(target: Path, marker: dict[str, Any]) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `target`; on success write the marker last, rename it to `target`.

    An existing `target` is replaced only when it carries the marker (i.e. it is an older synthetic twin);
    anything else there, such as a real dataset, is never touched. Losing the race to another process that
    renamed the same twin into place first counts as done.
    """
    if _holds_other_data(target):
        raise FileExistsError(f"{target} exists and is not a synthetic dataset (it has no {MARKER_FILE}); "
                              "refusing to overwrite it: move it away or choose another --root")
    with staged_directory(target, written=lambda folder: _read_marker(folder) == _as_json(marker)) as folder:
        yield folder
        (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a synthetic twin, or None where there is none (or it cannot be read)."""
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _as_json(marker: dict[str, Any]) -> Any:
    """The marker as reading it back gives it (tuples become lists)."""
    return json.loads(json.dumps(marker))


def _holds_other_data(target: Path) -> bool:
    """Whether `target` exists with content this generator did not write (no marker), e.g. a real dataset."""
    if not target.exists():
        return False
    return not (target / MARKER_FILE).is_file() and (not target.is_dir() or any(target.iterdir()))


def _write_pickle(path: Path, content: dict[str, Any]) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """N×32×32×3 images as CIFAR rows: the red plane, then green, then blue."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_synthetic_cifar(
    root: str | os.PathLike[str], *, num_classes: int = 10, n_train_per_class: int = 500,
    n_test_per_class: int = 100, seed: int = 0,
) -> Path:
    """Write `<root>/cifar-10-batches-py` (10 classes) or `<root>/cifar-100-python` (100 classes) with the
    official pickle structure and label names; return that folder."""
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 (CIFAR-10) or 100 (CIFAR-100), got {num_classes}")
    _check_counts(n_train_per_class=n_train_per_class, n_test_per_class=n_test_per_class)
    arguments = {"num_classes": num_classes, "n_train_per_class": n_train_per_class,
                 "n_test_per_class": n_test_per_class, "seed": seed}
    is_cifar10 = num_classes == 10
    target = Path(root) / (CIFAR10_DIR if is_cifar10 else CIFAR100_DIR)
    names = CIFAR10_LABEL_NAMES if is_cifar10 else CIFAR100_FINE_LABEL_NAMES
    with _build_tree(target, _marker("cifar", arguments)) as folder:
        splits = {}
        for stream, per_class in ((_TRAIN_STREAM, n_train_per_class), (_TEST_STREAM, n_test_per_class)):
            rng = np.random.default_rng([seed, stream])
            labels = _balanced_labels(num_classes, per_class, rng, shuffle=True)
            images, _ = render_pattern_images(labels, num_classes, 32, rng)
            file_names = [f"synthetic_{names[label]}_s_{k:06d}.png" for k, label in enumerate(labels)]
            splits[stream] = (_cifar_rows(images), labels, file_names)
        if is_cifar10:
            rows, labels, file_names = splits[_TRAIN_STREAM]
            parts = np.array_split(np.arange(len(labels)), 5)
            for number, part in enumerate(parts, start=1):
                _write_pickle(folder / f"data_batch_{number}", {
                    "batch_label": f"training batch {number} of 5", "labels": labels[part].tolist(),
                    "data": rows[part], "filenames": [file_names[i] for i in part]})
            rows, labels, file_names = splits[_TEST_STREAM]
            _write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1",
                                                  "labels": labels.tolist(), "data": rows,
                                                  "filenames": file_names})
            _write_pickle(folder / "batches.meta", {"num_cases_per_batch": len(parts[0]), "num_vis": 3072,
                                                    "label_names": list(CIFAR10_LABEL_NAMES)})
        else:
            coarse = np.asarray(CIFAR100_COARSE_OF_FINE, dtype=np.int64)
            for stream, file, batch_label in ((_TRAIN_STREAM, "train", "training batch 1 of 1"),
                                              (_TEST_STREAM, "test", "testing batch 1 of 1")):
                rows, labels, file_names = splits[stream]
                _write_pickle(folder / file, {"filenames": file_names, "batch_label": batch_label,
                                              "fine_labels": labels.tolist(),
                                              "coarse_labels": coarse[labels].tolist(), "data": rows})
            _write_pickle(folder / "meta", {"fine_label_names": list(CIFAR100_FINE_LABEL_NAMES),
                                            "coarse_label_names": list(CIFAR100_COARSE_LABEL_NAMES)})
    return target


def _save_jpeg(path: Path, picture: Image.Image, grayscale: bool) -> None:
    if grayscale:
        picture = picture.convert("L")
    picture.save(path, format="JPEG", quality=90)


def _grayscale_choice(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which of `count` images to store as grayscale: round(fraction*count), at least one if fraction > 0."""
    flags = np.zeros(count, dtype=bool)
    chosen = min(count, max(round(fraction * count), 1 if fraction > 0 else 0))
    flags[rng.choice(count, size=chosen, replace=False)] = True
    return flags


def _box_text(box: np.ndarray) -> str:
    return "\t".join(str(int(v)) for v in box)


def write_synthetic_tiny_imagenet(
    root: str | os.PathLike[str], *, num_classes: int = 200, n_train_per_class: int = 50,
    n_val_per_class: int = 10, seed: int = 0, grayscale_fraction: float = 0.05,
) -> Path:
    """Write `<root>/tiny-imagenet-200` in the official layout (64×64 JPEGs, unsorted wnids.txt, words.txt,
    train/<wnid>/images + <wnid>_boxes.txt, val/images + val_annotations.txt, some grayscale JPEGs)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    _check_counts(n_train_per_class=n_train_per_class, n_val_per_class=n_val_per_class)
    if not 0.0 <= grayscale_fraction <= 1.0:
        raise ValueError(f"grayscale_fraction must lie in [0, 1], got {grayscale_fraction}")
    arguments = {"num_classes": num_classes, "n_train_per_class": n_train_per_class,
                 "n_val_per_class": n_val_per_class, "seed": seed,
                 "grayscale_fraction": float(grayscale_fraction)}
    target = Path(root) / TINY_IMAGENET_DIR
    wnids = [synthetic_wnid(c) for c in range(num_classes)]
    with _build_tree(target, _marker("tinyimagenet", arguments)) as folder:
        layout_rng = np.random.default_rng([seed, _LAYOUT_STREAM])
        # The official wnids.txt is not sorted; loaders must not rely on its order.
        listed = "".join(f"{wnids[c]}\n" for c in layout_rng.permutation(num_classes))
        (folder / "wnids.txt").write_text(listed)
        words = [f"{wnid}\tsynthetic_{c:03d}, synthetic pattern {c}\n" for c, wnid in enumerate(wnids)]
        # words.txt covers every WordNet synset, far more than the 200 classes.
        words += [f"{synthetic_wnid(num_classes + k)}\tunused synset {k}\n" for k in range(3)]
        (folder / "words.txt").write_text("".join(words))

        rng = np.random.default_rng([seed, _TRAIN_STREAM])
        labels = _balanced_labels(num_classes, n_train_per_class, rng, shuffle=False)
        images, boxes = render_pattern_images(labels, num_classes, 64, rng)
        grayscale = _grayscale_choice(len(labels), grayscale_fraction, rng)
        for c, wnid in enumerate(wnids):
            image_dir = folder / "train" / wnid / "images"
            image_dir.mkdir(parents=True)
            box_lines = []
            for k, index in enumerate(np.flatnonzero(labels == c)):
                file_name = f"{wnid}_{k}.JPEG"
                _save_jpeg(image_dir / file_name, Image.fromarray(images[index]), grayscale[index])
                box_lines.append(f"{file_name}\t{_box_text(boxes[index])}\n")
            (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(box_lines))

        rng = np.random.default_rng([seed, _TEST_STREAM])
        labels = _balanced_labels(num_classes, n_val_per_class, rng, shuffle=True)
        images, boxes = render_pattern_images(labels, num_classes, 64, rng)
        grayscale = _grayscale_choice(len(labels), grayscale_fraction, rng)
        (folder / "val" / "images").mkdir(parents=True)
        annotation_lines = []
        for k, label in enumerate(labels):
            file_name = f"val_{k}.JPEG"
            _save_jpeg(folder / "val" / "images" / file_name, Image.fromarray(images[k]), grayscale[k])
            annotation_lines.append(f"{file_name}\t{wnids[label]}\t{_box_text(boxes[k])}\n")
        (folder / "val" / "val_annotations.txt").write_text("".join(annotation_lines))
    return target


def write_synthetic_imagenet(
    root: str | os.PathLike[str], *, num_classes: int = 10, n_train_per_class: int = 50,
    n_val_per_class: int = 10, image_size: int = 128, seed: int = 0, grayscale_fraction: float = 0.05,
) -> Path:
    """Write an ImageNet-style tree at `root` (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) with images of varying
    size and aspect ratio around `image_size`, a few of them grayscale; return `root`."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    _check_counts(n_train_per_class=n_train_per_class, n_val_per_class=n_val_per_class)
    if not 0.0 <= grayscale_fraction <= 1.0:
        raise ValueError(f"grayscale_fraction must lie in [0, 1], got {grayscale_fraction}")
    arguments = {"num_classes": num_classes, "n_train_per_class": n_train_per_class,
                 "n_val_per_class": n_val_per_class, "image_size": image_size, "seed": seed,
                 "grayscale_fraction": float(grayscale_fraction)}
    target = Path(root)
    wnids = [synthetic_wnid(c) for c in range(num_classes)]
    with _build_tree(target, _marker("imagenet", arguments)) as folder:
        for stream, split, per_class in ((_TRAIN_STREAM, "train", n_train_per_class),
                                         (_TEST_STREAM, "val", n_val_per_class)):
            rng = np.random.default_rng([seed, stream])
            labels = _balanced_labels(num_classes, per_class, rng, shuffle=False)
            images, _ = render_pattern_images(labels, num_classes, image_size, rng)
            grayscale = _grayscale_choice(len(labels), grayscale_fraction, rng)
            shapes = np.rint(image_size * rng.uniform(0.75, 1.3, size=(len(labels), 2))).astype(int)
            for wnid in wnids:
                (folder / split / wnid).mkdir(parents=True)
            for k, label in enumerate(labels):
                file_name = (f"{wnids[label]}_{k}.JPEG" if split == "train"
                             else f"ILSVRC2012_val_{k + 1:08d}.JPEG")
                picture = Image.fromarray(images[k]).resize((int(shapes[k, 0]), int(shapes[k, 1])),
                                                            Image.Resampling.BILINEAR)
                _save_jpeg(folder / split / wnids[label] / file_name, picture, grayscale[k])
    return target


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


_WRITERS: dict[str, tuple[Callable[..., Path], dict[str, Any], str]] = {
    "cifar10": (write_synthetic_cifar, {"num_classes": 10}, "cifar"),
    "cifar100": (write_synthetic_cifar, {"num_classes": 100}, "cifar"),
    "tinyimagenet": (write_synthetic_tiny_imagenet, {}, "tinyimagenet"),
    "imagenet": (write_synthetic_imagenet, {}, "imagenet"),
}


def synthetic_dataset_dir(name: str, root: str | os.PathLike[str]) -> Path:
    """The folder the generator for dataset `name` writes under `root`."""
    folders = {"cifar10": CIFAR10_DIR, "cifar100": CIFAR100_DIR, "tinyimagenet": TINY_IMAGENET_DIR}
    if name not in _WRITERS:
        raise ValueError(f"no synthetic generator for {name!r}; choose one of {', '.join(_WRITERS)}")
    return Path(root) / folders[name] if name in folders else Path(root)


def write_synthetic(name: str, root: str | os.PathLike[str], **arguments: Any) -> Path:
    """Write the synthetic twin of dataset `name` under `root` (replacing an older twin); return it."""
    writer, fixed, _ = _writer(name, arguments)
    return writer(root, **fixed, **arguments)


def ensure_synthetic(name: str, root: str | os.PathLike[str], **arguments: Any) -> Path:
    """Return the synthetic twin of dataset `name` under `root`, writing it only when it is missing or was
    written with other arguments. A folder there without the marker (a real dataset) is returned untouched."""
    writer, fixed, generator = _writer(name, arguments)
    target = synthetic_dataset_dir(name, root)
    if _holds_other_data(target):
        return target
    bound = inspect.signature(writer).bind(root, **fixed, **arguments)
    bound.apply_defaults()
    wanted = _marker(generator, {key: value for key, value in bound.arguments.items() if key != "root"})
    if _read_marker(target) == _as_json(wanted):
        return target
    return writer(root, **fixed, **arguments)


def _writer(name: str, arguments: dict[str, Any]) -> tuple[Callable[..., Path], dict[str, Any], str]:
    if name not in _WRITERS:
        raise ValueError(f"no synthetic generator for {name!r}; choose one of {', '.join(_WRITERS)}")
    writer, fixed, generator = _WRITERS[name]
    clash = sorted(set(fixed) & set(arguments))
    if clash:
        raise ValueError(f"{name} fixes {clash}; do not pass them")
    return writer, fixed, generator
