"""How fast a training runs on its device: mixed precision, memory format, cuDNN autotuning, TF32.

One place decides each setting from `train:` and the device, so the trainer, the evaluations and the
benchmark agree. Every setting is a no-op on the CPU unless asked for (bfloat16 autocast and channels-last
run there too), so the CPU's bit-for-bit reproducibility is untouched by the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from colt_core.config import ConfigError

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Precision:
    """Autocast to `dtype` (None: full precision); float16 needs a GradScaler, bfloat16 does not."""

    dtype: torch.dtype | None = None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "off")  # type: ignore[arg-type]

    @contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Autocast on `device` in this precision (nothing when full precision)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=self.dtype):
            yield

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """The loss scaler float16 training needs (None otherwise)."""
        return torch.amp.GradScaler(device.type) if self.needs_scaler else None


FULL = Precision()


def bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_precision(device: torch.device, mode: str | bool = "auto") -> Precision:
    """`train.amp` on `device`: auto = bfloat16 where the GPU has it, float16 (with a GradScaler) on other GPUs,
    full precision on the CPU; bf16 and off as named; fp16 on a GPU only. YAML reads `off` as false and
    `on` as true: false is off, true is auto."""
    mode = {True: "auto", False: "off"}.get(mode, mode)  # type: ignore[call-overload]
    if mode == "off":
        return FULL
    if mode == "auto":
        if device.type != "cuda":
            return FULL
        return Precision(torch.bfloat16 if bf16_supported(device) else torch.float16)
    if mode == "bf16":
        if device.type == "cuda" and not bf16_supported(device):
            raise ConfigError(f"train.amp: bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16 "
                              "or auto")
        return Precision(torch.bfloat16)
    if mode == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp: fp16 autocast needs a GPU; on the CPU use bf16 or off")
        return Precision(torch.float16)
    raise ConfigError(f"train.amp: must be one of {', '.join(AMP_MODES)}, got {mode!r}")


def _auto(value: Any, default: bool) -> bool:
    return default if value == "auto" else bool(value)


@dataclass(frozen=True)
class Speed:
    """The throughput settings of one trainer on its device, resolved from `train:`."""

    precision: Precision = FULL
    channels_last: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None

    @classmethod
    def resolve(cls, cfg: Any, device: torch.device, *, fixed_input_size: bool, num_workers: int) -> Speed:
        """`cfg` is a `TrainConfig`; `fixed_input_size` whether every batch has one input size (what makes
        cuDNN's autotuning pay off); on the CPU only what is asked for explicitly applies."""
        cuda = device.type == "cuda"
        return cls(precision=resolve_precision(device, cfg.amp),
                   channels_last=_auto(cfg.channels_last, cuda),
                   cudnn_benchmark=cuda and _auto(cfg.cudnn_benchmark, fixed_input_size),
                   tf32=cuda and cfg.tf32,
                   persistent_workers=num_workers > 0 and _auto(cfg.persistent_workers, cuda),
                   prefetch_factor=cfg.prefetch_factor if num_workers > 0 else None)

    def apply_backends(self) -> None:
        """Set the process-wide cuDNN and TF32 switches (CUDA only: they do nothing on the CPU)."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def prepare(self, model: nn.Module) -> nn.Module:
        """`model` in the memory format training uses (channels-last for convolutions, when on)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        on = [name for name, flag in (("channels_last", self.channels_last),
                                      ("cudnn_benchmark", self.cudnn_benchmark), ("tf32", self.tf32),
                                      ("persistent_workers", self.persistent_workers)) if flag]
        return f"amp {self.precision.name}" + (f", {', '.join(on)}" if on else "")
