"""The sparse state_dict file: only the surviving weights of each masked tensor, and their positions.

Positions are a bit mask packed with `numpy.packbits` or int32 flat indices, whichever is smaller; other
tensors (biases, norm statistics) are stored as they are. A file loads with `torch.load(..., weights_only=True)`
and reads back (`load_sparse`) into exactly the tensors it was written from.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colt_core.errors import UserError
from colt_core.io import atomic_save, load_checkpoint

SPARSE_FORMAT = "colt-sparse-state-dict"
SPARSE_VERSION = 1


class SparseFormatError(UserError, ValueError):
    """A sparse state_dict file is malformed."""


def _sparse_record(name: str, tensor: torch.Tensor, keep: torch.Tensor | None) -> dict[str, Any]:
    """The smallest encoding of one tensor: a packed bit mask + values, int32 indices + values, or dense.

    A masked tensor always keeps its positions (bit mask or indices), so its mask reads back exactly.
    """
    tensor = tensor.detach().cpu()
    dense = {"encoding": "dense", "tensor": tensor.clone()}
    masked = keep is not None
    if keep is None:
        if not tensor.is_floating_point() or tensor.dim() == 0:
            return dense
        keep = tensor != 0
    elif tuple(keep.shape) != tuple(tensor.shape):
        raise ValueError(f"{name}: mask shape {tuple(keep.shape)} differs from the tensor's "
                         f"{tuple(tensor.shape)}")
    keep = keep.detach().cpu().bool()
    flat, flat_keep = tensor.reshape(-1), keep.reshape(-1)
    if bool((flat[~flat_keep] != 0).any()):
        raise ValueError(f"{name}: weights outside the mask are not zero; apply the mask before saving")
    n, alive, item = flat.numel(), int(flat_keep.sum()), tensor.element_size()
    index_bytes = 4 if n < 2**31 else 8
    sizes = {"dense": n * item, "bitmask": math.ceil(n / 8) + alive * item,
             "indices": alive * (index_bytes + item)}
    if masked:
        del sizes["dense"]
    encoding = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    if encoding == "dense":
        return dense
    values = flat[flat_keep].clone()
    record: dict[str, Any] = {"encoding": encoding, "shape": list(tensor.shape), "values": values}
    if encoding == "bitmask":
        record["bits"] = torch.from_numpy(np.packbits(flat_keep.numpy()))
    else:
        dtype = torch.int32 if index_bytes == 4 else torch.int64
        record["indices"] = flat_keep.nonzero().flatten().to(dtype)
    return record


def encode_sparse(state_dict: Mapping[str, torch.Tensor],
                  mask: Mapping[str, torch.Tensor] | None = None) -> OrderedDict[str, dict[str, Any]]:
    """Encode a state_dict: with a `mask`, the tensors it names keep exactly its positions (a surviving
    weight that is exactly zero stays a survivor) and every other tensor is stored as it is; without one,
    the positions are the non-zeros of each floating-point tensor, where that is smaller.
    """
    if mask is None:
        return OrderedDict((name, _sparse_record(name, t, None)) for name, t in state_dict.items())
    unknown = sorted(set(mask) - set(state_dict))
    if unknown:
        raise ValueError(f"mask names tensors the state_dict does not hold: {unknown[:5]}")
    return OrderedDict((name, _sparse_record(name, t, mask[name]) if name in mask
                        else {"encoding": "dense", "tensor": t.detach().cpu().clone()})
                       for name, t in state_dict.items())


def save_sparse(state_dict: Mapping[str, torch.Tensor], path: str | Path,
                mask: Mapping[str, torch.Tensor] | None = None,
                meta: Mapping[str, Any] | None = None) -> Path:
    """Write the compact sparse file of a state_dict atomically (see `encode_sparse`)."""
    data = {"format": SPARSE_FORMAT, "version": SPARSE_VERSION, "tensors": encode_sparse(state_dict, mask),
            "meta": dict(meta or {})}
    atomic_save(data, path)
    return Path(path)


def _read_sparse(path: str | Path) -> Mapping[str, Any]:
    data = load_checkpoint(path)
    if not isinstance(data, Mapping) or data.get("format") != SPARSE_FORMAT:
        raise SparseFormatError(f"{path}: not a COLT sparse state_dict file "
                                "(the format colt_core.export.save_sparse writes)")
    if data.get("version") != SPARSE_VERSION:
        raise SparseFormatError(f"{path}: sparse format version {data.get('version')!r}; this code reads "
                                f"version {SPARSE_VERSION}")
    if not isinstance(data.get("tensors"), Mapping):
        raise SparseFormatError(f"{path}: has no 'tensors' mapping")
    return data


def _survivors(record: Mapping[str, Any], n: int, bad: Callable[[str], SparseFormatError]) -> torch.Tensor:
    """The flat survivor mask of a bit-mask or indices record of `n` elements."""
    if record["encoding"] == "bitmask":
        bits = record.get("bits")
        if not torch.is_tensor(bits) or bits.dtype != torch.uint8 or bits.numel() != math.ceil(n / 8):
            raise bad(f"bit mask must be {math.ceil(n / 8)} uint8 bytes")
        return torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
    indices = record.get("indices")
    integer = torch.is_tensor(indices) and indices.dtype in (torch.int32, torch.int64)
    if not integer or indices.dim() != 1:
        raise bad("indices must be a 1-D int32/int64 tensor")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise bad(f"indices outside 0..{n - 1}")
    keep = torch.zeros(n, dtype=torch.bool)
    keep[indices.long()] = True
    if int(keep.sum()) != indices.numel():
        raise bad("repeated indices")
    return keep


def _decode(path: str | Path, name: str, record: Any) -> torch.Tensor:
    """The dense tensor of one record."""
    def bad(why: str) -> SparseFormatError:
        return SparseFormatError(f"{path}: tensor {name!r}: {why}; the file is damaged, export it again")

    if not isinstance(record, Mapping) or record.get("encoding") not in ("dense", "bitmask", "indices"):
        raise bad("unknown encoding")
    if record["encoding"] == "dense":
        if not torch.is_tensor(record.get("tensor")):
            raise bad("dense record without a tensor")
        return record["tensor"]
    shape, values = record.get("shape"), record.get("values")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise bad(f"invalid shape {shape!r}")
    if not torch.is_tensor(values) or values.dim() != 1:
        raise bad("values must be a 1-D tensor")
    n = math.prod(shape)
    keep = _survivors(record, n, bad)
    if int(keep.sum()) != values.numel():
        raise bad(f"{int(keep.sum())} positions but {values.numel()} values")
    flat = torch.zeros(n, dtype=values.dtype)
    flat[keep] = values
    return flat.reshape(shape)


def load_sparse(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Read a sparse file back into the dense state_dict it was written from (identical tensors)."""
    data = _read_sparse(path)
    return OrderedDict((name, _decode(path, name, rec)) for name, rec in data["tensors"].items())
