"""Who does what in a run spread over torchrun's ranks; every call is a plain call in a single process.

Rank 0 owns the run directory: it alone reads and writes it (`on_main`) and hands what it read to the
others. A round's partitions are spread over the ranks (`spread`: in turn when there are fewer ranks than
partitions, data-parallel blocks when there are more); the full-data trainings use every rank (`full`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from colt_core.distributed import (
    DistContext,
    check_same_across_ranks,
    full_data_context,
    gather_to_main,
    partition_contexts,
    run_on_main,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class Ranks:
    """This process's part in a run: alone (`dist` None) or one rank of a torchrun job."""

    def __init__(self, dist: DistContext | None) -> None:
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self._contexts: list[DistContext | None] = []
        self._full = dist
        self.trains_full = True  # whether this rank takes part in the full-data trainings

    @property
    def full(self) -> DistContext | None:
        """The context of a full-data training: every rank data-parallel (one per device where ranks share
        devices; this rank then waits when `trains_full` is false)."""
        return self._full

    def on_main(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on rank 0; every rank gets its result (or its error)."""
        return run_on_main(self.dist, fn, *args)

    def check_same(self, tensors: Mapping[str, torch.Tensor], what: str) -> None:
        """Stop the job, naming the ranks, unless every rank holds the same `tensors`."""
        check_same_across_ranks(self.dist, tensors, what)

    def assign(self, n_partitions: int) -> None:
        """Decide which ranks train each partition (every rank calls this once, at the same point)."""
        if self.dist is None:
            self._contexts = [None] * n_partitions
            return
        self._contexts = partition_contexts(self.dist, n_partitions)
        self._full = full_data_context(self.dist)
        self.trains_full = self._full is not None
        mine = [i for i, ctx in enumerate(self._contexts) if ctx is not None]
        if self.dist.shares_devices and self.is_main:
            log.info("%d ranks per node share %d device(s): partitions train side by side, and a full-data "
                     "training takes one rank per device", self.dist.local_world_size, self.dist.devices)
        log.info("rank %d of %d trains partition(s) %s of each round%s", self.dist.rank, self.dist.world_size, mine,
                 "" if self.trains_full else " and waits during the full-data trainings (its device is shared)")

    def spread(self, items: Sequence[int], work: Callable[[int, DistContext | None], T],
               keep: Callable[[int, T], None], what: str) -> None:
        """`work(i, ctx)` for each partition `i` on the ranks assigned to it; `keep(i, result)` on rank 0.

        Rank 0 keeps its own results as soon as they exist, so a run stopped by another rank's failure
        keeps them; the others hand theirs over once they have all finished (`what` names the wait).
        """
        outgoing: dict[int, T] = {}
        for i in items:
            ctx = self._contexts[i]
            if self.dist is not None and ctx is None:
                continue  # other ranks train this partition
            result = work(i, ctx)
            if ctx is not None and not ctx.is_group_main:
                continue  # the group's first rank reports it
            if self.is_main:
                keep(i, result)
            else:
                outgoing[i] = result
        if self.dist is None:
            return
        handed = gather_to_main(self.dist, outgoing, what)
        for part in handed or []:
            for i, result in part.items():
                keep(i, result)
