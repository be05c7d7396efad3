"""Training a given ticket on a task's full data and evaluating it (Morcos et al.'s ticket transfer).

The ticket (mask + θ0, found on this or another dataset) goes into a model built for the task's label
set: every weight but the freshly initialised output layer must match the ticket's names and shapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from colt_core.distributed import DistContext, full_data_context, run_on_main
from colt_core.prune.channels import ChannelPlan, check_channel_mask
from colt_core.prune.magnitude import PruneGroup
from colt_core.prune.sparsity import sparsity_report
from colt_core.prune.ticket import Ticket, TicketError, check_ticket_fits
from colt_core.prune.weights import rewind
from colt_core.run.rounds import task_control
from colt_core.run.store import RunStore
from colt_core.rundir import Evaluation, RunDir
from colt_core.runtime import derive_seed, seed_everything
from colt_core.train.task import Task, TrainJob, channel_plan
from colt_core.train.trainer import Trainer


def train_ticket(task: Task, trainer: Trainer, ticket: Ticket, ticket_path: str | Path, run_dir: RunDir, *,
                 seed: int, config_dict: Mapping[str, Any] | None = None, dist: DistContext | None = None,
                 control: str | None = None) -> Evaluation:
    """Train `ticket` (read from `ticket_path`) on `task`'s full data and evaluate it; return the evaluation.
    With `control` (random_prune, random_reinit) train that control of the ticket instead.

    Writes config.yaml, model.pt and metrics.json into `run_dir` (an unfinished training resumes from its
    checkpoint there; a finished one is read back). The ticket must come from the task the run is for (the
    config's `task`). Under torchrun every rank trains data-parallel and rank 0 alone writes and evaluates.
    """
    store, files = RunStore(run_dir), run_dir.training

    def stored() -> Evaluation | None:
        if config_dict is not None:
            store.start(config_dict)
        return store.stored_training(files)

    done = run_on_main(dist, stored)
    if done is not None:
        return done
    expected = (config_dict or {}).get("task") or task.architecture().get("task")
    found = ticket.architecture.get("task")
    if found != expected:
        name = ticket.architecture.get("name", "unknown architecture")
        raise TicketError(f"{ticket_path}: a {found or 'untagged'} ticket ({name}) cannot be trained by the "
                          f"{expected} task; pass a ticket found on a {expected} run")
    mask, weights = ticket.mask, ticket.init
    if control is not None:
        channels = ticket_channel_plan(task, ticket) if ticket.meta.get("granularity") == "channel" else None
        made = task_control(task, control, ticket.mask, ticket.init, seed, channels=channels)
        mask, weights = made.mask, made.start
    seed_everything(derive_seed(seed, "head", "ticket"))
    model = task.build_model(len(task.class_names))
    check_ticket_fits(ticket, model, task.output_layers, source=str(ticket_path))
    rewind(model, weights, mask, task.output_layers, keep_output=True)
    ctx = full_data_context(dist) if dist is not None else None  # where ranks share devices, one per device
    job = TrainJob(round=0, partition=None, class_ids=None, model=model, mask=mask,
                   seed=derive_seed(seed, "ticket", "transfer"), files=files, data_seed=derive_seed(seed, "data"),
                   dist=ctx, device=trainer.device, amp=trainer.amp, label=control, make_loader=trainer.loader)
    start = time.perf_counter()
    out = trainer.train(job) if dist is None or ctx is not None else None
    if out is not None:
        model.load_state_dict(out.state_dict)

    def evaluate_and_write() -> Evaluation:
        evaluation = Evaluation.from_task(task.evaluate(model.to(job.device), job))
        sparsity = sparsity_report(mask, total_params=sum(p.numel() for p in model.parameters()))
        evaluation.details["ticket"] = {"path": str(ticket_path), "architecture": ticket.architecture,
                                        "meta": ticket.meta, "sparsity": sparsity["overall"]["sparsity"],
                                        "prune_rate": sparsity["prune_rate"]["rate"], "control": control}
        if control == "random_prune":
            store.save_mask(files, mask)
        assert out is not None  # rank 0 always trains
        evaluation.training, evaluation.wall_time_s = out.record, time.perf_counter() - start + out.earlier_s
        store.save_trained(files, out.state_dict)
        store.save_evaluation(files, evaluation)
        return evaluation

    return run_on_main(dist, evaluate_and_write)


def ticket_channel_plan(task: Task, ticket: Ticket) -> ChannelPlan:
    """The channel plan a channel ticket was found under, traced on `task`'s model: its linear layers pruned by
    neuron or by weight as its meta says (tickets written before the meta said: neuron when the mask is a
    channel mask of that plan, weight otherwise)."""
    groups = [PruneGroup("ticket", 0.0, tuple(sorted(ticket.mask)))]
    num_classes = len(task.class_names)
    recorded = ticket.meta.get("fc_granularity")
    if recorded in ("weight", "neuron"):
        return channel_plan(task, groups, task.output_layers, num_classes, neurons=recorded == "neuron")
    plan = channel_plan(task, groups, task.output_layers, num_classes, neurons=True)
    try:
        check_channel_mask(ticket.mask, plan, "ignore")
    except ValueError:
        return channel_plan(task, groups, task.output_layers, num_classes, neurons=False)
    return plan
