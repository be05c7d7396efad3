"""`colt train`: find a COLT (or LTH) ticket for the task a config names, or train a given ticket (or one of its
controls), and report it.

The task comes from the config's `task:` key and is looked up in the registry; `make_train_command(task)` makes the
same command bound to one task for the per-task scripts in `tools/`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from colt_core import cli
from colt_core.config import ConfigError, apply_override, from_dict, read_yaml, resolve_config_path, to_dict
from colt_core.distributed import DistContext, distributed_session, run_on_main
from colt_core.prune.ticket import Ticket, TicketError, check_ticket_fits, load_ticket
from colt_core.registry import TaskEntry, get_task, task_of_config
from colt_core.report import (
    ReportStyle,
    given_ticket_markdown,
    metric_name,
    per_class_columns,
    per_class_markdown,
    rounds_markdown,
    test_set_counts,
    test_set_line,
    test_set_note,
    write_given_ticket_report,
    write_report,
)
from colt_core.report.rounds_table import evaluations_interval_note, interval_note, verdict_lines
from colt_core.run.rounds import RoundLoop, RunResult
from colt_core.run.transfer import train_ticket
from colt_core.rundir import Evaluation, RunDir
from colt_core.rundir.policy import RunDirLock, check_run_dir, start_run_dir
from colt_core.settings import RunConfig
from colt_core.train.task import Task
from colt_core.train.trainer import Trainer


def configs_dir() -> Path:
    """Where a bare config name is looked up: ./configs when it exists, else the checkout's configs/."""
    here = Path("configs")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "configs"


# ----- the config and the given ticket ---------------------------------------------------------------
def load_run_config(cfg_name: str, overrides: Sequence[str], out: str | None, *, task: str | None = None,
                    ticket: str | None = None, control: str | None = None) -> tuple[TaskEntry, RunConfig]:
    """The task of a config and the checked config, with `--set`, `--out`, `--ticket` and `--control` applied.

    `task` binds the command to one task (a per-task tool): a config of another task is refused, one without
    a `task:` key is taken as that task's.
    """
    path = resolve_config_path(cfg_name, configs_dir())
    data = read_yaml(path)
    extra = [f"ticket={Path(ticket).resolve()}"] if ticket is not None else []
    extra += [f"control={control}"] if control is not None else []
    for override in [*overrides, *extra]:
        apply_override(data, override)
    if task is not None:
        given = data.setdefault("task", task)
        if given != task:
            raise ConfigError(f"{path}: task: {given} is not a {task} config; run it with "
                              f"`colt train --cfg {cfg_name}`, which picks the task from the config")
    entry = task_of_config(data, str(path))
    cfg = from_dict(entry.config, data)
    if out is not None:
        cfg.output_dir = out
    return entry, cfg


def given_ticket(cfg: RunConfig) -> Ticket | None:
    """The ticket the config asks to train (`ticket`), read and checked; None: find one."""
    if cfg.ticket is None:
        return None
    if not Path(cfg.ticket).is_file():
        raise TicketError(f"--ticket {cfg.ticket}: no such file")
    return load_ticket(cfg.ticket)


# ----- seeds -------------------------------------------------------------------------------------------
def seed_configs(cfg: RunConfig, seeds: Sequence[int] | None) -> list[RunConfig]:
    """The config of each run `--seeds` asks for (the config itself without it)."""
    if not seeds:
        return [cfg]
    return [dataclasses.replace(cfg, seed=seed, output_dir=str(Path(cfg.output_dir) / f"seed_{seed}"))
            for seed in seeds]


def seeds_line(cfg: RunConfig, seeds: Sequence[int]) -> str:
    """What a --seeds run ends with: where its runs are and how to compare them."""
    out = Path(cfg.output_dir)
    return (f"seeds {', '.join(map(str, seeds))}: runs in {out}/seed_K; compare them (with another method's "
            f"seeds too) with: colt compare {out}/seed_* --out {out}/compare")


def run_seeds(cfg: RunConfig, seeds: Sequence[int] | None, dist: DistContext | None,
              run: Callable[[RunConfig], None]) -> None:
    """`run` on the config of each seed `--seeds` asks for (on `cfg` itself without it), then, on rank 0,
    where the seeds' runs are."""
    for one in seed_configs(cfg, seeds):
        run(one)
    if seeds and (dist is None or dist.is_main):
        click.echo(seeds_line(cfg, seeds))


# ----- one run -----------------------------------------------------------------------------------------
@contextmanager
def writing_run_dir(path: str, dist: DistContext | None) -> Iterator[None]:
    """Hold the one-writer lock of run directory `path` for the block (rank 0 holds it for every rank): a
    directory another live process writes is refused, on every rank, before anything in it changes."""
    lock = RunDirLock(path)
    with cli.user_errors():
        run_on_main(dist, lock.acquire)
    try:
        yield
    finally:
        lock.release()


def open_run_dir(entry: TaskEntry, cfg: RunConfig, prepared: Any, ticket: Ticket | None, *, resume: bool,
                 overwrite: bool, dist: DistContext | None) -> tuple[RunDir, Task]:
    """The run directory of `cfg` and the task built for it. Rank 0 checks the directory (a stored config is
    completed with today's defaults before it is compared), every rank builds the task (reading the data and
    the weights), and only then does rank 0 create the directory or, for --overwrite, delete the run it held:
    a run that cannot start leaves the old one as it was."""
    def complete(stored: dict[str, Any]) -> dict[str, Any]:
        return to_dict(from_dict(type(cfg), {"task": cfg.task, **stored}))

    replace = run_on_main(dist, check_run_dir, cfg.output_dir, to_dict(cfg), resume=resume, overwrite=overwrite,
                          complete=complete)
    task = entry.build(cfg, dist, prepared)
    if replace and ticket is not None:  # a ticket of another model would stop the new run after the deletion
        check_ticket_fits(ticket, task.build_model(len(task.class_names)), task.output_layers, source=str(cfg.ticket))
    return run_on_main(dist, start_run_dir, cfg.output_dir, replace=replace), task


def make_trainer(task: Task, cfg: RunConfig, run: RunDir) -> Trainer:
    """The engine's trainer for a run: the config's train:/eval: sections, TensorBoard under the run."""
    return Trainer(task, cfg.train, eval_batch_size=cfg.eval.batch_size,
                   num_workers=cfg.data.num_workers, tensorboard=run.tensorboard_for)


def find_ticket(task: Task, cfg: RunConfig, run: RunDir, style: ReportStyle,
                dist: DistContext | None = None, notes: Sequence[str] = ()) -> RunResult:
    """Run (or continue) the COLT/LTH rounds of `cfg` for `task` in `run`, rewriting the report as they end."""
    names = list(task.class_names)
    k = cfg.prune.rewind_iteration
    if k:
        source = "its round 0" if cfg.prune.method == "lth" else "the dense model (round_00/eval)"
        notes = [*notes, f"Late rewinding: every training after the one it comes from starts from the weights after "
                         f"{k} optimizer steps of {source}; ticket.pt holds those weights."]

    def on_update(summary: Any) -> None:
        write_report(run, summary, names, style, notes)

    return RoundLoop(task, make_trainer(task, cfg, run), cfg.prune, cfg.split, seed=cfg.seed, run_dir=run,
                     config_dict=to_dict(cfg), on_update=on_update, dist=dist).run()


def ticket_line(result: RunResult) -> str:
    """The line a training tool ends with: where the ticket is and how sparse it is."""
    final = result.rounds[-1]
    return (f"ticket: {result.run_dir.ticket}  sparsity {100 * final.sparsity:.2f}% of prunable weights "
            f"(prune rate {100 * final.prune_rate:.2f}% of all parameters) after {final.round} round(s)")


def result_lines(result: RunResult, class_names: Sequence[str], style: ReportStyle) -> list[str]:
    """What a search ends with on the terminal: the ticket line, the rounds and per-class tables, the test set."""
    summary = result.summary
    lines = ["", ticket_line(result), rounds_markdown(summary, style.extra_columns)]
    lines += [note for note in (interval_note(summary),) if note]
    columns = per_class_columns(summary)
    if columns and len(class_names) <= style.markdown_class_limit:
        table = per_class_markdown(columns, class_names, digits=style.digits, mean_row=style.mean_row,
                                   counts=test_set_counts(summary)[1], count_title=style.count_title)
        lines.append(f"{style.per_class_title}, {metric_name(summary)}:\n{table}")
    lines += [line for line in (test_set_note(summary), test_set_line(summary, style.count_title)) if line]
    return lines


def run_one(entry: TaskEntry, cfg: RunConfig, ticket: Ticket | None, prepared: Any, *, resume: bool,
            overwrite: bool, dist: DistContext | None) -> None:
    """One run: a ticket search, or the training of a given ticket (or its control), its run directory locked
    from the first look at it to the end."""
    main_rank = dist is None or dist.is_main
    style = entry.report_style(to_dict(cfg))
    with writing_run_dir(cfg.output_dir, dist):
        with cli.user_errors():
            run, task = open_run_dir(entry, cfg, prepared, ticket, resume=resume, overwrite=overwrite, dist=dist)
        if ticket is not None:
            with cli.user_errors():  # most of what can go wrong here is the ticket the user brought
                evaluation = train_ticket(task, make_trainer(task, cfg, run), ticket, cfg.ticket, run,
                                          seed=cfg.seed, config_dict=to_dict(cfg), dist=dist, control=cfg.control)
            if main_rank:
                with cli.user_errors(run):  # a full disk while writing the report
                    report_given_ticket(run, evaluation, task.class_names, style)
            return
        with cli.user_errors(run):
            result = find_ticket(task, cfg, run, style, dist, entry.notes(cfg, prepared))
    if main_rank:
        for line in result_lines(result, task.class_names, style):
            click.echo(line)
        click.echo(f"report: {run.report}")
        for line in verdict_lines(result.summary):  # last: the run's answer, in words and numbers
            click.echo(line)


def report_given_ticket(run: RunDir, evaluation: Evaluation, class_names: Sequence[str], style: ReportStyle) -> None:
    """Write and print the report of a given ticket's training."""
    write_given_ticket_report(run, evaluation, class_names, style)
    click.echo("\n" + given_ticket_markdown(evaluation, style))
    if (note := evaluations_interval_note([evaluation])) is not None:
        click.echo(note)
    click.echo(f"report: {run.report}")


# ----- the command -------------------------------------------------------------------------------------
def train(cfg_name: str, overrides: Sequence[str], out: str | None, resume: bool, overwrite: bool, verbose: bool,
          ticket_path: str | None, control: str | None, seeds: list[int] | None, task: str | None = None) -> None:
    """Everything `colt train` does, for the task of the config (or `task`, for a per-task tool)."""
    with distributed_session() as dist:
        cli.configure_logging(verbose, dist)
        with cli.user_errors():
            entry, base = load_run_config(cfg_name, overrides, out, task=task, ticket=ticket_path, control=control)
            ticket = given_ticket(base)
            prepared = entry.prepare(base, dist)  # before any work: missing data or weights stop it here
        run_seeds(base, seeds, dist, lambda cfg: run_one(entry, cfg, ticket, prepared, resume=resume,
                                                         overwrite=overwrite, dist=dist))


EXAMPLE = """
\b
Examples:
  colt train --cfg voc_synth_tiny.yaml
  colt train --cfg voc_vgg16.yaml --set train.epochs=20 --out runs/x
  colt train --cfg cifar10_resnet18.yaml --ticket runs/tinyimagenet_resnet18/ticket.pt --out runs/transfer
  torchrun --standalone --nproc_per_node=K $(which colt) train --cfg voc_vgg16.yaml   # K processes (GPUs)
"""


def make_train_command(task: str | None = None, name: str = "train") -> click.Command:
    """The `train` command: for the task every config names, or bound to `task` (a per-task tool)."""
    what = f"a {get_task(task).name} model" if task else "the task the config names"

    @click.command(name=name, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"Run COLT/LTH rounds for {what} (or train a given ticket); write the run directory and "
                        "its report. Under torchrun the processes share the work.\n" + EXAMPLE)
    @cli.run_options
    @cli.ticket_options
    @cli.seeds_option
    def command(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
                verbose: bool, ticket_path: str | None, control: str | None, seeds: list[int] | None) -> None:
        train(cfg_name, overrides, out, resume, overwrite, verbose, ticket_path, control, seeds, task=task)

    return command


train_command = make_train_command()
