"""Synthetic classification datasets in the real on-disk formats, written once per test session."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from colt_cls.synthetic import write_synthetic_cifar, write_synthetic_imagenet, write_synthetic_tiny_imagenet

# Sizes: CIFAR-10 big enough for the learnability check, the rest as small as the checks allow.
SIZES = SimpleNamespace(
    cifar10_train_per_class=60, cifar10_test_per_class=20,
    small_train_per_class=25, small_test_per_class=10,
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
def small_cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred images, for end-to-end runs of the trainer and the tool."""
    root = tmp_path_factory.mktemp("small_cifar10")
    write_synthetic_cifar(root, num_classes=10, n_train_per_class=SIZES.small_train_per_class,
                          n_test_per_class=SIZES.small_test_per_class, seed=1)
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


def _tiny_run_config(root: Path, out: Path, **sections: dict) -> dict:
    """A classification run config (as plain data) small enough for a test: eighth-width Conv-3,
    one epoch, CPU; `sections` update the top-level sections key by key."""
    config = {
        "seed": 0, "output_dir": str(out),
        "data": {"name": "cifar10", "root": str(root), "val_fraction": 0.2, "num_workers": 0},
        "model": {"name": "conv3", "width": 0.125},
        # One thread: a tiny model on a shared CPU runs several times faster than on contended threads.
        "train": {"epochs": 1, "batch_size": 50, "optimizer": {"name": "adam", "lr": 0.003},
                  "schedule": {"name": "constant", "warmup_epochs": 0}, "device": "cpu", "progress": False,
                  "cpu_threads": 1},
        "eval": {"batch_size": 250},
        "prune": {"method": "colt", "partitions": 2, "rates": {"conv": 0.15, "fc": 0.2},
                  "target_sparsity": 0.95, "max_rounds": 2, "evaluate": "first_last"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture(scope="session")
def run_config() -> Callable[..., dict]:
    """`run_config(root, out, **sections)`: a tiny classification run config as plain data."""
    return _tiny_run_config


@pytest.fixture(scope="session")
def train_tool() -> Callable:
    """The click command of tools/train_colt_cls.py."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "tools" / "train_colt_cls.py"
    spec = importlib.util.spec_from_file_location("train_colt_cls", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """Runs set `train.cpu_threads` (process-wide in torch); give every test torch's setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
