"""Data loaders and batches as every training, validation and test evaluation uses them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from colt_core.train.speed import Speed
from colt_core.train.task import Batch


def make_loader(dataset: Dataset, *, batch_size: int, collate: Callable | None, num_workers: int,
                device: torch.device, generator: torch.Generator | None = None, sampler: Any = None,
                drop_single: bool = False, speed: Speed | None = None) -> DataLoader:
    """A DataLoader as every training and evaluation uses it: shuffled by `generator` (or `sampler`) when
    given; `drop_single` drops a last batch of one sample, which BatchNorm cannot normalise. Pinned memory
    on CUDA (the batches then copy without blocking); `speed` keeps workers alive and prefetching."""
    per_rank = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
    workers = {} if speed is None or num_workers == 0 else {"persistent_workers": speed.persistent_workers,
                                                             "prefetch_factor": speed.prefetch_factor}
    return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                      sampler=sampler, collate_fn=collate, drop_last=drop_single and per_rank % batch_size == 1,
                      num_workers=num_workers, pin_memory=device.type == "cuda", **workers)


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of a batch (nested lists, tuples and dicts) on `device`; other values as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size(batch: Batch) -> int:
    """Samples in a batch: the length of its inputs, the first element of `(inputs, targets)`."""
    return len(batch[0])


def describe_data(dataset: Dataset) -> dict[str, Any]:
    """What a training or validation set holds: the dataset's own `summary()`, else its size."""
    summary = getattr(dataset, "summary", None)
    return dict(summary()) if callable(summary) else {"images": len(dataset)}  # type: ignore[arg-type]
