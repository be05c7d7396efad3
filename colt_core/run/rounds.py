"""The round loop shared by COLT-N and LTH: what is trained under which mask, pruning, intersection,
rewinding, when to stop, and which tickets are evaluated.

What is on disk and what a resumed run skips is `colt_core.run.store.RunStore`'s; which rank does what is
`colt_core.run.ranks.Ranks`'; how a model is trained is `colt_core.train.trainer.Trainer`'s. This module is the
algorithm alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from colt_core.config import ConfigError, to_dict
from colt_core.distributed import DistContext
from colt_core.io import load_checkpoint
from colt_core.prune.channels import ChannelPlan, check_channel_mask, prune_by_channel
from colt_core.prune.controls import Control, make_control
from colt_core.prune.magnitude import PruneGroup, magnitude_prune, per_layer, resolve_prune_groups
from colt_core.prune.masks import Mask, intersect_masks, ones_mask
from colt_core.prune.partition import split_classes, validate_groups
from colt_core.prune.sparsity import overall_sparsity, sparsity_report
from colt_core.prune.ticket import Ticket
from colt_core.prune.weights import rewind, snapshot
from colt_core.run.ranks import Ranks
from colt_core.run.store import RunStore, State
from colt_core.rundir import (
    Evaluation,
    PartitionResult,
    RoundRecord,
    RunDir,
    RunDirError,
    RunSummary,
    TrainingDir,
    TrainingRecord,
)
from colt_core.runtime import derive_seed, seed_everything
from colt_core.settings import PruneConfig, SplitConfig
from colt_core.train.early_bird import EarlyBird
from colt_core.train.task import Task, TrainJob, TrainOutput, channel_plan
from colt_core.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """COLT-N or LTH, decided once: what a round trains, from where, and how its ticket is evaluated.

    LTH (iterative magnitude pruning) is one "partition" holding every class: it trains the full data with
    the full-size output layer, which rewinds to θ0 like every other layer, and its round's training is
    the ticket's evaluation. COLT trains each class group with a fresh output layer of the group's size.
    """

    name: str
    partitions: int
    rewind_iteration: int = 0

    @classmethod
    def of(cls, prune: PruneConfig) -> Method:
        return cls(prune.method, prune.n_partitions, prune.rewind_iteration)

    @property
    def full_data(self) -> bool:
        return self.name == "lth"

    @property
    def rewinds_late(self) -> bool:
        return self.rewind_iteration > 0

    def job_classes(self, group: Sequence[int]) -> list[int] | None:
        """The class ids a partition job trains on (None: every class, labels as in the dataset)."""
        return None if self.full_data else list(group)

    @property
    def partition_keeps_built_head(self) -> bool:
        """Whether a partition keeps the output layer it was built with: COLT's is a fresh one of its group's
        size; LTH's is the full-size layer and rewinds like the rest."""
        return not self.full_data

    def ticket_keeps_built_head(self, r: int) -> bool:
        """Whether round `r`'s ticket evaluation gets a fresh all-class output layer: COLT's does, unless it
        rewinds late to a full-data training's weights, whose output layer is all-class already."""
        return not self.full_data and (r == 0 or not self.rewinds_late)

    def rewind_source(self, run_dir: RunDir) -> TrainingDir:
        """The training whose weights after `rewind_iteration` steps are the run's one rewind point."""
        return run_dir.rewind_source(self.name)


def draw_init(task: Task, seed: int, *key: Any) -> State:
    """A task's θ0 for a run's `seed` (no `key`), or another draw of the same init scheme (random_reinit's)."""
    seed_everything(derive_seed(seed, "init", *key))
    return snapshot(task.build_model(len(task.class_names)))


def task_control(task: Task, name: str, mask: Mask, start: State, seed: int, *key: Any,
                 channels: ChannelPlan | None = None) -> Control:
    """Control `name` of a ticket (`mask` from `start`) of a run's `seed`; `key` tells the run's tickets apart
    (a round's index; none for a ticket trained on its own); `channels`: the plan of a channel ticket."""
    return make_control(name, mask, start, seed=derive_seed(seed, "control", name, *key),
                        draw_init=lambda: draw_init(task, seed, "control", *key), channels=channels)


def ticket_architecture(task: Task, task_name: str | None) -> dict[str, Any]:
    """The architecture a ticket stores: the task's description, tagged with the name the task registered as
    (the registry finds the task of a ticket by it)."""
    architecture = dict(task.architecture())
    if task_name:
        architecture["task"] = task_name
    return architecture


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: RunDir
    ticket: Ticket
    summary: RunSummary

    @property
    def rounds(self) -> list[RoundRecord]:
        return self.summary.rounds


class RoundLoop:
    """COLT-N (and LTH) rounds over a run directory, for any task, with any number of ranks."""

    def __init__(self, task: Task, trainer: Trainer, prune: PruneConfig, split: SplitConfig, *, seed: int,
                 run_dir: RunDir, config_dict: Mapping[str, Any],
                 on_update: Callable[[RunSummary], None] | None = None, dist: DistContext | None = None) -> None:
        self.task, self.trainer, self.prune, self.split, self.seed = task, trainer, prune, split, seed
        self.method = Method.of(prune)
        self.run_dir = run_dir
        self.store = RunStore(run_dir)
        self.ranks = Ranks(dist)
        self.config_dict = dict(config_dict)
        self.on_update = on_update
        self.output_layers = list(prune.output_layers or task.output_layers)
        self.num_classes = len(task.class_names)
        self.groups: list[PruneGroup] = []  # the prune groups of the task's model, resolved when the run starts
        self.channels: ChannelPlan | None = None  # a channel run's channel groups, traced when the run starts

    # ----- setup -------------------------------------------------------------------------------
    def _split(self) -> list[list[int]]:
        """The class groups the partitions train on (one group of every class for LTH)."""
        n = self.prune.n_partitions
        if self.method.full_data:
            return [list(range(self.num_classes))]
        if self.split.groups is not None:
            if len(self.split.groups) != n:
                raise ConfigError(f"split.groups: {len(self.split.groups)} groups given but prune.partitions is {n}")
            return validate_groups(self.split.groups, self.num_classes, self.task.class_names)
        if n > self.num_classes:
            raise ConfigError(f"prune.partitions: must be <= the number of classes ({self.num_classes}), got {n}")
        return split_classes(self.num_classes, n, self.seed if self.split.seed is None else self.split.seed)

    def _draw_init(self, *key: Any) -> State:
        """θ0 (no `key`), or another draw of the same init scheme (random_reinit's)."""
        return draw_init(self.task, self.seed, *key)

    def _prune_groups(self) -> tuple[list[PruneGroup], int, Mask]:
        """The prune groups of the task's model, its parameter count, and the all-surviving mask over the
        groups (one model built for all three)."""
        seed_everything(0)
        model = self.task.build_model(self.num_classes)
        specs = {k: _spec_dict(v) for k, v in (self.prune.groups or self.task.default_prune_groups).items()}
        groups = resolve_prune_groups(model, specs, self.prune.rates, self.output_layers,
                                      include_frozen=self.prune.prune_frozen)
        mask = ones_mask(model, [n for g in groups for n in g.params])
        return groups, sum(p.numel() for p in model.parameters()), mask

    def _build(self, num_outputs: int, head_key: Any, start: Mapping[str, torch.Tensor], mask: Mask,
               keep_output: bool) -> nn.Module:
        """A model for `num_outputs` classes (its output layer seeded by `head_key`), rewound to `start`."""
        seed_everything(derive_seed(self.seed, "head", head_key))
        model = self.task.build_model(num_outputs)
        rewind(model, start, mask, self.output_layers, keep_output=keep_output)
        return model

    def _job(self, r: int, partition: int | None, class_ids: list[int] | None, model: nn.Module, mask: Mask,
             seed: int, dist: DistContext | None, rewind_iteration: int = 0, control: str | None = None) -> TrainJob:
        rdir = self.run_dir.round(r)
        files = rdir.partition(partition) if partition is not None else rdir.control(control) if control else rdir.eval
        return TrainJob(round=r, partition=partition, class_ids=class_ids, model=model, mask=mask, seed=seed,
                        files=files, rewind_iteration=rewind_iteration,
                        non_iid_max_drop=self.split.non_iid_max_drop if self.split.non_iid else 0.0,
                        data_seed=derive_seed(self.seed, "data"), dist=dist, device=self.trainer.device,
                        amp=self.trainer.amp, label=control, make_loader=self.trainer.loader)

    def _rewind_point(self) -> State:
        """The weights after `rewind_iteration` steps of the run's rewind source (stored by its training)."""
        path = self.method.rewind_source(self.run_dir).rewind
        if not path.is_file():
            raise RunDirError(f"{path}: the late-rewinding weights are missing although that training finished; "
                              "the run was started by a version that kept them elsewhere: start it again with "
                              "--overwrite or another --out")
        return load_checkpoint(path)

    # ----- one step each -----------------------------------------------------------------------
    def _train_partition(self, r: int, i: int, class_ids: list[int], start: State, mask: Mask,
                         ctx: DistContext | None) -> tuple[State, PartitionResult, State | None]:
        """Train partition `i` of round `r` from `start` on this rank (with the other ranks of `ctx`)."""
        model = self._build(len(class_ids), ("partition", i), start, mask,
                            keep_output=self.method.partition_keeps_built_head)
        rewind_iteration = self.prune.rewind_iteration if r == 0 and self.method.full_data else 0
        job = self._job(r, i, self.method.job_classes(class_ids), model, mask, derive_seed(self.seed, "train", r, i),
                        ctx, rewind_iteration)
        job.full_data_steps = self.prune.partition_steps == "full_data" and not self.method.full_data
        if self.prune.early_bird is not None:
            def would_prune(weights: Mapping[str, torch.Tensor]) -> Mask:
                return self._prune(weights, mask, start, "ignore")  # a would-be mask: a collapse is the round's

            job.early_bird = EarlyBird(self.prune.early_bird, would_prune, mask)
        t0 = time.perf_counter()
        out = self.trainer.train(job)
        result = PartitionResult(classes=list(class_ids), training=out.record,
                                 wall_time_s=time.perf_counter() - t0 + out.earlier_s,
                                 slot=ctx.ranks[0] if ctx is not None else None)
        return out.state_dict, result, out.rewind_state

    def _train_round(self, r: int, class_groups: list[list[int]], start: State, mask: Mask
                     ) -> tuple[list[State] | None, list[PartitionResult]]:
        """Train (or read back) every partition of round `r` from `start`: the selected weights (on rank 0;
        None on the other ranks) and the results (on every rank)."""
        n = len(class_groups)
        done = set(self.ranks.on_main(self.store.finished_partitions, r, n))
        results: dict[int, tuple[State, PartitionResult]] = {}

        def train(i: int, ctx: DistContext | None) -> tuple[State, PartitionResult, State | None]:
            return self._train_partition(r, i, class_groups[i], start, mask, ctx)

        def keep(i: int, trained: tuple[State, PartitionResult, State | None]) -> None:
            state, result, rewind_state = trained
            self.store.save_partition(r, i, state, result, rewind_state)
            results[i] = (state, result)

        todo = [i for i in range(n) if i not in done]
        self.ranks.spread(todo, train, keep, f"waiting for the partition trainings of round {r}")
        if self.ranks.is_main:
            for i in done:
                results[i] = self.store.load_partition(r, i)

        def stored_results() -> list[PartitionResult]:
            return [results[i][1] for i in range(n)]

        trained = [results[i][0] for i in range(n)] if self.ranks.is_main else None
        return trained, self.ranks.on_main(stored_results)

    def _evaluate(self, r: int, start: State, mask: Mask, *, reuse: bool = False,
                  trained: State | None = None) -> Evaluation:
        """Train the ticket of round `r` from `start` on the full data (every rank, data-parallel) and evaluate
        it on rank 0.

        With `reuse` (LTH, whose round trained the full data under this very mask) the round's own model,
        `trained` (given on rank 0), is the evaluated one. COLT's dense model (round 0) keeps its weights
        after `rewind_iteration` steps: they are the run's rewind point.
        """
        stored = self.ranks.on_main(self.store.stored_evaluation, r)
        if stored is not None:
            return stored
        model = self._build(self.num_classes, "ticket", start, mask,
                            keep_output=self.method.ticket_keeps_built_head(r))
        late = self.prune.rewind_iteration if r == 0 and not self.method.full_data else 0
        job = self._job(r, None, None, model, mask, derive_seed(self.seed, "ticket", r), self.ranks.full, late)
        t0 = time.perf_counter()
        if reuse:
            # LTH trains the full data under this mask anyway: that model is the ticket's evaluation.
            if self.ranks.is_main:
                model.load_state_dict(trained)
            return self._score(job, model, t0, reused=self.store.reused_training(r))
        out = self._train_full(job, model)
        if out is not None and self.ranks.is_main:
            self.store.save_trained(job.files, out.state_dict, out.rewind_state)
        return self._score(job, model, t0 - (out.earlier_s if out else 0.0), training=out.record if out else None)

    def _train_full(self, job: TrainJob, model: nn.Module) -> TrainOutput | None:
        """A full-data training on the ranks that take part in it (all, or one per shared device; the others
        get None and wait); `model` ends with the selected weights."""
        if not self.ranks.trains_full:
            return None
        out = self.trainer.train(job)
        model.load_state_dict(out.state_dict)
        return out

    def _control(self, r: int, name: str, start: State, mask: Mask) -> Evaluation:
        """Train and evaluate control `name` of round `r`'s ticket (`mask` from `start`) like the ticket itself."""
        files = self.run_dir.round(r).control(name)
        stored = self.ranks.on_main(self.store.stored_training, files)
        if stored is not None:
            return stored
        control = task_control(self.task, name, mask, start, self.seed, r, channels=self.channels)
        fresh_init = name == "random_reinit"  # its own freshly drawn output layer; random_prune: the ticket's
        if self.ranks.is_main and not fresh_init:
            self.store.save_mask(files, control.mask)
        model = self._build(self.num_classes, ("control", name) if fresh_init else "ticket", control.start,
                            control.mask, keep_output=self.method.ticket_keeps_built_head(r) and not fresh_init)
        job = self._job(r, None, None, model, control.mask, derive_seed(self.seed, "ticket", r), self.ranks.full,
                        control=name)
        t0 = time.perf_counter()
        out = self._train_full(job, model)
        if out is not None and self.ranks.is_main:
            self.store.save_trained(files, out.state_dict)
        return self._score(job, model, t0 - (out.earlier_s if out else 0.0), training=out.record if out else None)

    def _score(self, job: TrainJob, model: nn.Module, t0: float, *, training: TrainingRecord | None = None,
               reused: str | None = None) -> Evaluation:
        """The task's test-set evaluation of a full-data model (on rank 0, every rank gets it), stored; its wall time
        is counted from `t0` (moved back by the time a resumed training spent before this process)."""
        def evaluate() -> Evaluation:
            evaluation = Evaluation.from_task(self.task.evaluate(model.to(job.device), job),
                                              source=f"{type(self.task).__name__}.evaluate")
            evaluation.training, evaluation.reused = training, reused
            evaluation.wall_time_s = time.perf_counter() - t0
            self.store.save_evaluation(job.files, evaluation)
            return evaluation

        return self.ranks.on_main(evaluate)

    def _evaluate_with_controls(self, record: RoundRecord, start: State, mask: Mask, **reuse: Any) -> None:
        """Round `record.round`'s ticket evaluation and, for a sparse ticket, its controls."""
        r = record.round
        record.evaluation = self._evaluate(r, start, mask, **reuse)
        if record.sparsity > 0:
            record.controls = {name: self._control(r, name, start, mask) for name in self.prune.controls}

    def _prune(self, weights: Mapping[str, torch.Tensor], mask: Mask, start: State,
               on_layer_collapse: str | None = None) -> Mask:
        """The mask one trained model gives: its weights pruned under `mask` as prune.scope and prune.score say
        (magnitude_increase ranks by |w| - |w_start|, `start` being where the training began)."""
        pruned = per_layer(self.groups) if self.prune.scope == "layer" else self.groups
        reference = start if self.prune.score == "magnitude_increase" else None
        if self.channels is not None:
            return prune_by_channel(weights, mask, pruned, self.channels, channel_score=self.prune.channel_score,
                                    reference=reference,
                                    on_layer_collapse=on_layer_collapse or self.prune.on_layer_collapse)
        return magnitude_prune(weights, mask, pruned, reference=reference,
                               on_layer_collapse=on_layer_collapse or self.prune.on_layer_collapse)

    def _next_mask(self, trained: list[State], mask: Mask, start: State) -> Mask:
        """Prune each partition's trained weights under the current mask and intersect the results."""
        mask = intersect_masks([self._prune(state, mask, start) for state in trained])
        if self.channels is not None:
            check_channel_mask(mask, self.channels, self.prune.on_layer_collapse)  # still a channel mask
        return mask

    def _wants_eval(self, r: int, final: bool, reached: tuple[float, float] = (0.0, 0.0)) -> bool:
        """Whether round `r`'s ticket is evaluated; `reached` is (the previous round's sparsity, this round's)."""
        mode = self.prune.evaluate
        if any(reached[0] < level <= reached[1] for level in self.prune.evaluate_levels):
            return True
        return mode == "all" or (mode in ("final", "first_last") and final) or (mode == "first_last" and r == 0)

    # ----- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run (or continue) rounds until the target sparsity or the round limit; write the ticket.

        Under torchrun every rank calls this; the partitions of a round are spread over the ranks, the
        full-data trainings use every rank, and rank 0 alone writes the run directory.
        """
        if self.ranks.is_main:
            self.store.start(self.config_dict)
        class_names = list(self.task.class_names)
        class_groups = self.ranks.on_main(self.store.class_groups, self._split, class_names)
        init = self.ranks.on_main(self.store.init_weights, self._draw_init)
        start = init  # where every training rewinds to: θ0, or once round 0 has run, the late-rewinding point
        groups, total_params, mask = self._prune_groups()
        self.groups = groups
        if self.prune.granularity == "channel":
            self.channels = channel_plan(self.task, groups, self.output_layers, self.num_classes,
                                         neurons=self.prune.fc_granularity == "neuron")
        n = len(class_groups)
        self.ranks.assign(n)
        summary = RunSummary(self.prune.method, self.prune.n_partitions)
        r = 0
        while True:
            mask = self.ranks.on_main(self.store.round_mask, r, mask)  # a resumed run's stored mask wins
            record = self._open_round(r, mask, groups, total_params)
            reached = (summary.rounds[-1].sparsity if summary.rounds else 0.0, record.sparsity)
            if record.sparsity >= self.prune.target_sparsity or r >= self.prune.max_rounds:
                if self._wants_eval(r, final=True):
                    self._evaluate_with_controls(record, start, mask)
                self._close_round(summary, record)
                break
            if r == 0 and self.method.rewinds_late and not self.method.full_data:
                # COLT's rewind point is the dense model's: its full-data training comes first.
                record.evaluation = self._evaluate(0, init, mask)
                start = self.ranks.on_main(self._rewind_point)
            if self.ranks.is_main:
                log.info("round %d: sparsity %.2f%%, training %d partition(s)", r, 100 * record.sparsity, n)
            trained, record.partitions = self._train_round(r, class_groups, start, mask)
            if self._wants_eval(r, final=False, reached=reached):
                # LTH's round trains the full data under this very mask: the ticket's evaluation, unless it
                # stopped early (an early-bird search training), when the ticket gets a full training of its own.
                reuse = self.method.full_data and not any(p.training.stopped_early for p in record.partitions)
                self._evaluate_with_controls(record, init if r == 0 else start, mask, reuse=reuse,
                                             trained=trained[0] if trained else None)
            searched_from = start
            if r == 0 and self.method.rewinds_late and self.method.full_data:
                start = self.ranks.on_main(self._rewind_point)  # LTH's: its own round 0
            mask = self.ranks.on_main(self._next_mask, trained, mask, searched_from)
            self._close_round(summary, record)
            r += 1
        architecture = ticket_architecture(self.task, self.config_dict.get("task"))
        ticket = Ticket(mask=mask, init=start, architecture=architecture,
                        sparsity=sparsity_report(mask, groups, total_params),
                        meta={"method": self.prune.method, "partitions": self.prune.n_partitions, "rounds": r,
                              "seed": self.seed, "class_groups": class_groups, "output_layers": self.output_layers,
                              "class_names": class_names, "start": self._start_meta(),
                              **({"granularity": "channel", "fc_granularity": self.prune.fc_granularity}
                                 if self.channels is not None else {})})
        if self.ranks.is_main:
            self.store.save_ticket(ticket)
            self.store.close()
        return RunResult(self.run_dir, ticket, self.ranks.on_main(lambda: summary))

    def _start_meta(self) -> dict[str, Any]:
        """What the ticket's `init` is: θ0, or the late-rewinding weights and where they come from."""
        if not self.method.rewinds_late:
            return {"weights": "theta0"}
        return {"weights": "late_rewind", "iteration": self.prune.rewind_iteration,
                "source": self.run_dir.relative(self.method.rewind_source(self.run_dir).path)}

    def _open_round(self, r: int, mask: Mask, groups: list[PruneGroup], total_params: int) -> RoundRecord:
        """The record of round `r` under `mask` (the same on every rank), its sparsity report stored."""
        self.ranks.check_same(mask, f"the mask of round {r}")
        report = sparsity_report(mask, groups, total_params)
        if self.ranks.is_main:
            self.store.sparsity_report(r, report)
        return RoundRecord(round=r, sparsity=overall_sparsity(mask), prune_rate=report["prune_rate"]["rate"],
                           groups={k: v["sparsity"] for k, v in report["groups"].items()})

    def _close_round(self, summary: RunSummary, record: RoundRecord) -> None:
        record.wall_time_s = record.stored_time()
        summary.rounds.append(record)
        if not self.ranks.is_main:
            return
        self.store.update(summary)
        if self.on_update is not None:
            self.on_update(summary)


def _spec_dict(spec: Any) -> dict[str, list[str]]:
    if isinstance(spec, Mapping):
        return {k: list(v) for k, v in spec.items()}
    return {k: list(v) for k, v in to_dict(spec).items()}
