"""Runs spread over the processes of a torchrun job: partition-parallel rounds and data-parallel training.

`torchrun --nproc_per_node=K tools/train_colt_*.py ...` starts K processes (ranks). The round loop spreads a
round's N partition trainings over them (`partition_ranks`), trains the full-data models with
DistributedDataParallel over every rank, and lets rank 0 alone read and write the run directory, handing
what the others need to them with collectives. A `DistContext` names the ranks that train one job together;
`None` everywhere means a single process, and every helper here is then a plain call.

Backends: NCCL for CUDA tensors and gloo for CPU tensors (one process group serves both), plus a gloo group
over every rank for the waits between trainings, with a long timeout of its own: a rank that finished its
partition may wait hours for a rank still training a larger one. Timeouts (seconds) come from
`COLT_DIST_TIMEOUT_S` (collectives inside a training, default 1800) and `COLT_DIST_WAIT_TIMEOUT_S` (waits
between trainings, default 86400).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Subset

log = logging.getLogger(__name__)

DEVICES_ENV = "COLT_DEVICES_PER_NODE"
TIMEOUT_ENV = "COLT_DIST_TIMEOUT_S"
WAIT_TIMEOUT_ENV = "COLT_DIST_WAIT_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_WAIT_TIMEOUT_S = 86400.0

T = TypeVar("T")


class DistributedError(RuntimeError):
    """The ranks of a job disagree, or the job cannot be set up as launched."""


class PeerFailedError(DistributedError):
    """A collective failed or timed out: another rank stopped (its own error says why), hangs, or is slow."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job, and the ranks that train one job with it.

    `ranks` are the global ranks of the group (every rank for the full-data trainings, a partition's ranks
    for a partition training); `group` is their process group (None: the default group of every rank).
    `control` is the gloo group over every rank that carries the objects and waits between trainings.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    ranks: tuple[int, ...]
    group: dist.ProcessGroup | None = None
    control: dist.ProcessGroup | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    local_world_size: int = 1  # ranks per node
    devices: int | None = None  # devices a node's ranks share (None: every rank has one of its own)

    @property
    def shares_devices(self) -> bool:
        """Whether some ranks of a node share a device (more ranks than GPUs)."""
        return self.devices is not None and self.local_world_size > self.devices

    @property
    def is_main(self) -> bool:
        """Global rank 0: the one rank that reads and writes the run directory."""
        return self.rank == 0

    @property
    def group_size(self) -> int:
        return len(self.ranks)

    @property
    def group_rank(self) -> int:
        return self.ranks.index(self.rank)

    @property
    def is_group_main(self) -> bool:
        """The first rank of the group: it writes the training's working files and hands its result on."""
        return self.rank == self.ranks[0]

    @property
    def data_parallel(self) -> bool:
        """Whether the job is trained by several ranks (DistributedDataParallel, a distributed sampler)."""
        return self.group_size > 1


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer; launch with torchrun, "
                               "which sets RANK, WORLD_SIZE and LOCAL_RANK") from None


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistributedError(f"environment variable {name}={value!r}: expected a number of seconds > 0")
    return seconds


def device_slot(rank: int, local_world_size: int, devices: int | None) -> tuple[int, int]:
    """(node, device index) of a global rank: ranks take a node's devices round-robin (local rank mod devices);
    without a device count every rank has a slot of its own."""
    node, local = divmod(rank, max(local_world_size, 1))
    return (node, local if devices is None else local % devices)


def one_rank_per_device(ranks: Sequence[int], local_world_size: int, devices: int | None) -> list[int]:
    """The first rank of `ranks` on each device, in order: the ranks that may train data-parallel together
    (NCCL allows one rank per GPU in a group)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for rank in ranks:
        slot = device_slot(rank, local_world_size, devices)
        if slot not in seen:
            seen.add(slot)
            out.append(rank)
    return out


def _devices_per_node(cuda: bool) -> int | None:
    """The devices a node's ranks share: `COLT_DEVICES_PER_NODE` when set (at most the visible GPUs), else the
    visible GPUs; on the CPU, unless set, every rank counts as a device of its own."""
    value = os.environ.get(DEVICES_ENV)
    visible = torch.cuda.device_count() if cuda else None
    if value is None or value == "":
        return visible
    try:
        devices = int(value)
    except ValueError:
        devices = 0
    if devices < 1 or (visible is not None and devices > visible):
        limit = f" and at most the {visible} visible GPU(s)" if visible is not None else ""
        raise DistributedError(f"environment variable {DEVICES_ENV}={value!r}: expected an integer >= 1{limit}")
    return devices


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (RANK and WORLD_SIZE > 1 are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and _env_int("WORLD_SIZE") > 1


def init_distributed() -> DistContext | None:
    """Join the torchrun job this process belongs to; None when it runs alone (no torchrun, or one rank).

    Picks NCCL for CUDA tensors and gloo for CPU tensors, binds the process to GPU `LOCAL_RANK`, and makes
    the gloo control group over every rank.
    """
    if not launched_by_torchrun():
        return None
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    local_world_size = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else world_size
    timeout_s = _env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    wait_timeout_s = _env_seconds(WAIT_TIMEOUT_ENV, DEFAULT_WAIT_TIMEOUT_S)
    cuda = torch.cuda.is_available()
    devices = _devices_per_node(cuda)
    if cuda:
        # More ranks than GPUs share them round-robin; only groups of one rank per GPU train together.
        index = device_slot(local_rank, local_world_size, devices)[1]
        torch.cuda.set_device(index)
        device, backend = torch.device("cuda", index), "cpu:gloo,cuda:nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    control = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait_timeout_s))
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                      ranks=tuple(range(world_size)), group=None, control=control, timeout_s=timeout_s,
                      local_world_size=local_world_size, devices=devices)
    log.debug("rank %d of %d (local rank %d) joined with backend %s on %s", rank, world_size, local_rank, backend,
              device)
    return ctx


def _describe(ctx: DistContext) -> str:
    return f"rank {ctx.rank} of {ctx.world_size} (local rank {ctx.local_rank} on {socket.gethostname()})"


def _record_for_torchrun(exc: BaseException) -> None:
    """Write the exception to torchrun's error file so its failure summary names the cause."""
    try:
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(exc)
    except Exception:  # noqa: BLE001 - reporting must never hide the original error
        pass


def _abort() -> None:
    """Tear the process groups down at once, so peers blocked in a collective with this rank fail fast."""
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the group may already be broken; exiting matters more
        pass


@contextmanager
def distributed_session() -> Iterator[DistContext | None]:
    """`init_distributed()` for the body; on an error, say which rank failed and why, and stop the job.

    A failing rank prints `rank R of K (...) failed: <error>`, writes the error for torchrun's summary and
    destroys its process groups so that its peers' collectives fail instead of waiting; torchrun then stops
    the remaining ranks and exits non-zero.
    """
    ctx = init_distributed()
    try:
        yield ctx
    except BaseException as exc:
        if ctx is not None:
            if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
                print(f"{_describe(ctx)} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                _record_for_torchrun(exc)
            _abort()
            ctx = None
        raise
    finally:
        if ctx is not None:
            dist.destroy_process_group()


# ----- collectives with clear failures -----------------------------------------------------------------
def _collective(ctx: DistContext, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`; a failure becomes a PeerFailedError saying what this rank waited for."""
    try:
        return call(*args, **kwargs)
    except (RuntimeError, dist.DistError) as exc:
        waiting = kwargs.get("group") is ctx.control
        env = WAIT_TIMEOUT_ENV if waiting else TIMEOUT_ENV
        if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
            cause = (f"no answer from the other ranks within {env} (a rank hangs, or needs longer: then raise "
                     f"{env})")
        else:
            cause = "another rank stopped (its own error is printed above and in torchrun's failure summary)"
        raise PeerFailedError(f"rank {ctx.rank}: {what} failed: {cause}. Cause: {exc}") from exc


def _portable(exc: BaseException, src: int) -> BaseException:
    """`exc` if it survives pickling (so peers raise the same error), else a DistributedError naming it."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any exception that cannot travel is described instead
        return DistributedError(f"rank {src} failed: {type(exc).__name__}: {exc}")


def _run_on(ctx: DistContext, src: int, group: dist.ProcessGroup | None, what: str,
            fn: Callable[..., T], args: Sequence[Any], kwargs: Mapping[str, Any]) -> T:
    payload: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if ctx.rank == src:
        try:
            payload = (True, fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised everywhere
            error, payload = exc, (False, _portable(exc, src))
    box = [payload]
    _collective(ctx, what, dist.broadcast_object_list, box, src=src, group=group)
    if error is not None:
        raise error
    ok, value = box[0]
    if not ok:
        raise value
    return value


def run_on_main(ctx: DistContext | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on rank 0 (which owns the run directory); every rank gets its result.

    An exception on rank 0 is raised on every rank. Alone (`ctx` None) it is a plain call.
    """
    if ctx is None or ctx.world_size == 1:
        return fn(*args, **kwargs)
    name = getattr(fn, "__name__", "a step")
    return _run_on(ctx, 0, ctx.control, f"waiting for rank 0 ({name})", fn, args, kwargs)


def run_on_group_main(ctx: DistContext | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` on the first rank of `ctx`'s group; every rank of the group gets its result (or its error)."""
    if ctx is None or not ctx.data_parallel:
        return fn(*args, **kwargs)
    name = getattr(fn, "__name__", "a step")
    return _run_on(ctx, ctx.ranks[0], ctx.group, f"waiting for rank {ctx.ranks[0]} ({name})", fn, args, kwargs)


def gather_to_main(ctx: DistContext | None, obj: T, what: str = "gathering results") -> list[T] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None on the others); `[obj]` when alone."""
    if ctx is None or ctx.world_size == 1:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    _collective(ctx, what, dist.gather_object, obj, out, dst=0, group=ctx.control)
    return out


def barrier(ctx: DistContext | None, what: str = "waiting for every rank") -> None:
    """Wait until every rank gets here (nothing when alone)."""
    if ctx is not None and ctx.world_size > 1:
        _collective(ctx, what, dist.barrier, group=ctx.control)


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """A SHA-256 of names, dtypes, shapes and values: equal on two ranks exactly when the tensors are."""
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_same_across_ranks(ctx: DistContext | None, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise DistributedError, naming the ranks, unless every rank of `ctx`'s group holds the same `tensors`."""
    if ctx is None or ctx.group_size == 1:
        return
    checksum = tensor_checksum(tensors)
    every: list[Any] = [None] * ctx.group_size
    _collective(ctx, f"comparing {what} across ranks", dist.all_gather_object, every, checksum, group=ctx.group)
    if len(set(every)) > 1:
        listing = ", ".join(f"rank {r}: {c[:12]}" for r, c in zip(ctx.ranks, every, strict=True))
        raise DistributedError(f"the ranks disagree on {what} ({listing}): every rank must run the same code, "
                               "config and data, and data-parallel ranks must select the same epoch (the same "
                               "validation loss on every rank)")


# ----- spreading partitions over ranks -----------------------------------------------------------------
def partition_ranks(n_partitions: int, world_size: int) -> list[list[int]]:
    """The ranks that train each partition.

    K ranks, N partitions: K <= N gives partition i to rank i % K (ranks take partitions in turn);
    K > N gives each partition a block of contiguous ranks (K/N of them when N divides K), which train it
    data-parallel.
    """
    if n_partitions < 1 or world_size < 1:
        raise ValueError(f"need at least one partition and one rank, got {n_partitions} and {world_size}")
    if world_size <= n_partitions:
        return [[i % world_size] for i in range(n_partitions)]
    return [[r for r in range(world_size) if r * n_partitions // world_size == i] for i in range(n_partitions)]


def training_ranks(ranks: Sequence[int], ctx: DistContext) -> list[int]:
    """The ranks of `ranks` that train a job together: all of them, or where ranks share devices one per
    device (the others wait)."""
    return one_rank_per_device(ranks, ctx.local_world_size, ctx.devices) if ctx.shares_devices else list(ranks)


def group_context(ctx: DistContext, ranks: Sequence[int]) -> DistContext | None:
    """This rank's context for a job trained by `ranks` (a process group made for them when they are some
    of several ranks), or None when this rank is not one of them. Every rank must call this at the same
    point: process groups are made collectively."""
    group = None
    if 1 < len(ranks) < ctx.world_size:
        group = dist.new_group(list(ranks), timeout=timedelta(seconds=ctx.timeout_s))
    return replace(ctx, ranks=tuple(ranks), group=group) if ctx.rank in ranks else None


def partition_contexts(ctx: DistContext, n_partitions: int) -> list[DistContext | None]:
    """For each partition, this rank's context for training it, or None when other ranks train it.

    Creates one process group per partition trained by several ranks; every rank must call this at the
    same point (process groups are made collectively).
    """
    return [group_context(ctx, training_ranks(ranks, ctx)) for ranks in partition_ranks(n_partitions, ctx.world_size)]


def full_data_context(ctx: DistContext) -> DistContext | None:
    """This rank's context for a full-data training (every rank, or one per device where ranks share
    devices), or None when it waits for the others. Collective, like `partition_contexts`."""
    ranks = training_ranks(range(ctx.world_size), ctx)
    return ctx if len(ranks) == ctx.world_size else group_context(ctx, ranks)


# ----- data-parallel training helpers for the front ends -----------------------------------------------
def wrap_ddp(model: nn.Module, ctx: DistContext | None) -> nn.Module:
    """`model` in DistributedDataParallel over `ctx`'s group when several ranks train it, else `model`.

    Keep the unwrapped model for the optimizer, MaskKeeper (masks name its parameters), snapshots and
    evaluation: the wrapper shares its parameters and only averages gradients in backward.
    """
    if ctx is None or not ctx.data_parallel:
        return model
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, process_group=ctx.group)


def broadcast_buffers(model: nn.Module, ctx: DistContext | None) -> None:
    """Copy the group's first rank's buffers (e.g. batch-norm running statistics) to the other ranks.

    DistributedDataParallel does the same before every forward; after the last step of an epoch each
    rank's statistics hold its own batches, so they are made equal again before validation and snapshots.
    """
    if ctx is None or not ctx.data_parallel:
        return
    for buffer in model.buffers():
        _collective(ctx, "sharing batch-norm statistics", dist.broadcast, buffer, src=ctx.ranks[0], group=ctx.group)


def distributed_sampler(dataset: Dataset, ctx: DistContext | None, *, shuffle: bool, seed: int,
                        drop_last: bool = False) -> DistributedSampler | None:
    """A seeded DistributedSampler giving this rank its share of `dataset`; None when one rank trains.

    Call `set_sampler_epoch(loader, epoch)` at the start of every epoch so each epoch is shuffled anew.
    """
    if ctx is None or not ctx.data_parallel:
        return None
    return DistributedSampler(dataset, num_replicas=ctx.group_size, rank=ctx.group_rank, shuffle=shuffle,
                              seed=seed % 2**62, drop_last=drop_last)


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Reseed a loader's DistributedSampler for `epoch` (nothing for other samplers)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


def shard_for_evaluation(dataset: Dataset, ctx: DistContext | None) -> Dataset:
    """This rank's slice (every group-size-th item) of an evaluation set, without the padding a
    DistributedSampler adds, so sums over the shards equal sums over the set; the whole set when one rank
    evaluates or the set has fewer items than ranks."""
    if ctx is None or not ctx.data_parallel or len(dataset) < ctx.group_size:  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, list(range(ctx.group_rank, len(dataset), ctx.group_size)))  # type: ignore[arg-type]


def all_reduce_sums(values: Sequence[float], ctx: DistContext | None) -> list[float]:
    """Element-wise sums of `values` over the ranks of `ctx`'s group (the values themselves when alone)."""
    if ctx is None or not ctx.data_parallel:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    _collective(ctx, "summing evaluation results", dist.all_reduce, tensor, group=ctx.group)
    return tensor.tolist()
