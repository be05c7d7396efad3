"""Shared fixtures for the detection tests: hand-written VOC devkits and a small synthetic VOC."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colt_det.synthetic import ensure_synthetic_voc

# (name, (xmin, ymin, xmax, ymax) in VOC file coordinates, difficult)
ObjectSpec = tuple[str, tuple[float, float, float, float], bool]


def voc_annotation_xml(image_id: str, width: int, height: int, objects: Sequence[ObjectSpec]) -> str:
    """An annotation in the VOC schema, written out by hand (not by the code under test)."""
    parts = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts += [
            "\t<object>",
            f"\t\t<name>{name}</name><pose>Left</pose><truncated>1</truncated>",
            f"\t\t<difficult>{int(difficult)}</difficult>",
            f"\t\t<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


DevkitWriter = Callable[..., Path]


@pytest.fixture
def write_devkit(tmp_path: Path) -> DevkitWriter:
    """Write a small VOC year folder by hand; returns the folder holding VOCdevkit/.

    Call as write_devkit(images={id: [ObjectSpec, ...]}, sets={"trainval": [ids]}, year="2007",
    size=(width, height), root=optional). Images are solid grey JPEGs of the given size.
    """

    def write(
        images: Mapping[str, Sequence[ObjectSpec]],
        sets: Mapping[str, Sequence[str]],
        *,
        year: str = "2007",
        size: tuple[int, int] = (64, 48),
        root: Path | None = None,
    ) -> Path:
        root = tmp_path / "voc" if root is None else root
        year_dir = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (year_dir / sub).mkdir(parents=True, exist_ok=True)
        width, height = size
        for image_id, objects in images.items():
            Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(
                year_dir / "JPEGImages" / f"{image_id}.jpg"
            )
            (year_dir / "Annotations" / f"{image_id}.xml").write_text(
                voc_annotation_xml(image_id, width, height, objects)
            )
        for set_name, ids in sets.items():
            (year_dir / "ImageSets" / "Main" / f"{set_name}.txt").write_text("".join(f"{i}\n" for i in ids))
        return root

    return write


SYNTHETIC_TEST_PARAMS = {"seed": 0, "image_size": 64, "n_trainval": 24, "n_test": 12}


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic VOCdevkit (VOC2007 train/val/trainval/test, 64 px images), shared by the session."""
    return ensure_synthetic_voc(tmp_path_factory.mktemp("synthetic_voc"), **SYNTHETIC_TEST_PARAMS)
