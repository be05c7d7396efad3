"""Seeds and devices: one place that decides how a run is made reproducible and where it runs."""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import torch

from colt_core.config import ConfigError

T = TypeVar("T")


def derive_seed(base: int, *keys: object) -> int:
    """A 63-bit seed derived from a base seed and keys (e.g. "train", round, partition).

    Independent of Python's hash randomisation, so a resumed process derives the same seeds.
    """
    text = ":".join([str(base), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or requested), else the CPU.

    Under torchrun (LOCAL_RANK set) "auto" and "cuda" mean this process's own GPU, `cuda:LOCAL_RANK`.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {requested!r} requested but CUDA is not available; use auto or cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def progress_bar(iterable: Iterable[T], enabled: bool, desc: str) -> Iterable[T]:
    """A tqdm bar over `iterable` on a terminal when `enabled`; the iterable itself otherwise (logs, CI)."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)
