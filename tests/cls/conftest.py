"""Synthetic classification datasets in the real on-disk formats, written once per test session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from colt_cls.synthetic import write_synthetic_cifar, write_synthetic_imagenet, write_synthetic_tiny_imagenet

# Sizes: CIFAR-10 big enough for the learnability check, the rest as small as the checks allow.
SIZES = SimpleNamespace(
    cifar10_train_per_class=60, cifar10_test_per_class=20,
    cifar100_train_per_class=2, cifar100_test_per_class=1,
    tiny_classes=6, tiny_train_per_class=4, tiny_val_per_class=3, tiny_grayscale_fraction=0.2,
    imagenet_classes=3, imagenet_train_per_class=3, imagenet_val_per_class=2, imagenet_image_size=40,
)


@pytest.fixture(scope="session")
def sizes() -> SimpleNamespace:
    """The sizes the session datasets below were written with."""
    return SIZES


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_synthetic_cifar(root, num_classes=10, n_train_per_class=SIZES.cifar10_train_per_class,
                          n_test_per_class=SIZES.cifar10_test_per_class, seed=0)
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_synthetic_cifar(root, num_classes=100, n_train_per_class=SIZES.cifar100_train_per_class,
                          n_test_per_class=SIZES.cifar100_test_per_class, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinyimagenet")
    write_synthetic_tiny_imagenet(root, num_classes=SIZES.tiny_classes,
                                  n_train_per_class=SIZES.tiny_train_per_class,
                                  n_val_per_class=SIZES.tiny_val_per_class, seed=0,
                                  grayscale_fraction=SIZES.tiny_grayscale_fraction)
    return root


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    write_synthetic_imagenet(root, num_classes=SIZES.imagenet_classes,
                             n_train_per_class=SIZES.imagenet_train_per_class,
                             n_val_per_class=SIZES.imagenet_val_per_class,
                             image_size=SIZES.imagenet_image_size, seed=0)
    return root


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a session dataset into this test's tmp_path, so a test can damage it without harming others."""

    def copy(root: Path) -> Path:
        destination = tmp_path / "copy"
        shutil.copytree(root, destination)
        return destination

    return copy
