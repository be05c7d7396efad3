"""What the command-line tools share: their run options, logging, one `Error:` line for a user's mistake,
and the ticket search itself (a task, the engine's trainer and the round loop over a run directory)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from colt_core.config import from_dict, load_config, to_dict
from colt_core.distributed import DistContext, run_on_main
from colt_core.errors import UserError
from colt_core.prune.controls import CONTROLS
from colt_core.prune.ticket import Ticket, TicketError, load_ticket
from colt_core.report import ReportStyle, write_report
from colt_core.run.rounds import RoundLoop, RunResult
from colt_core.rundir import RunDir, prepare_run_dir
from colt_core.settings import RunConfig
from colt_core.train.task import Task
from colt_core.train.trainer import Trainer

C = TypeVar("C", bound=RunConfig)
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def user_errors(run: RunDir | None = None) -> Iterator[None]:
    """Turn a `UserError` into click's one `Error: ...` line and exit status 1, without a traceback.

    With `run` (a run in progress) the line adds that the run directory keeps what finished.
    """
    try:
        yield
    except UserError as exc:
        keeps = "" if run is None else (f" (the run directory {run.path} keeps what finished; fix the cause and "
                                        "continue with --resume)")
        raise click.ClickException(f"{exc}{keeps}") from None


def run_options(command: F) -> F:
    """The options every training tool takes: --cfg, --set, --out, --resume, --overwrite, -v."""
    options = [
        click.option("--cfg", "cfg_name", required=True, help="config path, or a file name under configs/"),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="override a config value (repeatable)"),
        click.option("--out", type=click.Path(file_okay=False),
                     help="run directory (default: the config's output_dir)"),
        click.option("--resume", is_flag=True, help="continue the run in the output directory"),
        click.option("--overwrite", is_flag=True, help="replace the run in the output directory"),
        click.option("-v", "--verbose", is_flag=True, help="debug logging"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def configure_logging(verbose: bool, dist: DistContext | None) -> None:
    rank = f"[rank {dist.rank}] " if dist is not None else ""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=f"%(asctime)s {rank}%(message)s",
                        datefmt="%H:%M:%S")


def ticket_options(command: F) -> F:
    """--ticket FILE (train a given ticket instead of finding one) and --control NAME (train its control)."""
    command = click.option("--control", type=click.Choice(CONTROLS),
                           help="with --ticket: train this control of the ticket instead (random_prune: a random "
                                "mask with its per-layer counts; random_reinit: its mask on a fresh init)")(command)
    return click.option("--ticket", "ticket_path", type=click.Path(dir_okay=False),
                        help="train this ticket file (found on this or another dataset) on the config's data "
                             "instead of finding a ticket")(command)


def _parse_seeds(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{value!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


def seeds_option(command: F) -> F:
    """--seeds 0,1,2: the same run once per seed, one after another, into OUT/seed_K."""
    return click.option("--seeds", callback=_parse_seeds, metavar="K,K,...",
                        help="run once per seed, one after another, into OUT/seed_K (resumable like one run; "
                             "compare them with tools/compare_runs.py OUT/seed_*)")(command)


def seed_configs(cfg: C, seeds: Sequence[int] | None) -> list[C]:
    """The config of each run `--seeds` asks for (the config itself without it)."""
    if not seeds:
        return [cfg]
    return [dataclasses.replace(cfg, seed=seed, output_dir=str(Path(cfg.output_dir) / f"seed_{seed}"))
            for seed in seeds]


def seeds_line(cfg: RunConfig, seeds: Sequence[int]) -> str:
    """What a --seeds run ends with: where its runs are and how to compare them."""
    out = Path(cfg.output_dir)
    return (f"seeds {', '.join(map(str, seeds))}: runs in {out}/seed_K; compare them (with another method's "
            f"seeds too) with: python tools/compare_runs.py {out}/seed_* --out {out}/compare")


def load_run_config(cls: type[C], cfg_name: str, overrides: Sequence[str], out: str | None,
                    configs_dir: Path, *, ticket: str | None = None, control: str | None = None) -> C:
    """The checked config, with `--out`, `--ticket` and `--control` applied."""
    extra = [f"ticket={Path(ticket).resolve()}"] if ticket is not None else []
    extra += [f"control={control}"] if control is not None else []
    cfg = load_config(cls, cfg_name, [*overrides, *extra], configs_dir=configs_dir)
    if out is not None:
        cfg.output_dir = out
    return cfg


def given_ticket(cfg: RunConfig) -> Ticket | None:
    """The ticket the config asks to train (`ticket`), read and checked; None: find one."""
    if cfg.ticket is None:
        return None
    if not Path(cfg.ticket).is_file():
        raise TicketError(f"--ticket {cfg.ticket}: no such file")
    return load_ticket(cfg.ticket)


def load_run(cls: type[C], cfg_name: str, overrides: Sequence[str], out: str | None, configs_dir: Path, *,
             ticket: str | None = None, control: str | None = None) -> tuple[C, Ticket | None]:
    """A tool's checked config (see `load_run_config`) and the ticket it asks to train (None: find one)."""
    cfg = load_run_config(cls, cfg_name, overrides, out, configs_dir, ticket=ticket, control=control)
    return cfg, given_ticket(cfg)


def run_seeds(cfg: C, seeds: Sequence[int] | None, dist: DistContext | None, run: Callable[[C], None]) -> None:
    """`run` on the config of each seed `--seeds` asks for (on `cfg` itself without it), then, on rank 0,
    where the seeds' runs are."""
    for one in seed_configs(cfg, seeds):
        run(one)
    if seeds and (dist is None or dist.is_main):
        click.echo(seeds_line(cfg, seeds))


def open_run_dir(cfg: RunConfig, *, resume: bool, overwrite: bool, dist: DistContext | None) -> RunDir:
    """The run directory of `cfg`, created or reopened by rank 0 (see `prepare_run_dir`); a stored config
    is completed with today's defaults before it is compared."""
    def complete(stored: dict[str, Any]) -> dict[str, Any]:
        return to_dict(from_dict(type(cfg), stored))

    return run_on_main(dist, prepare_run_dir, cfg.output_dir, to_dict(cfg), resume=resume, overwrite=overwrite,
                       complete=complete)


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
