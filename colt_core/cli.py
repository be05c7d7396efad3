"""What the command-line tools share: their run options, logging, and one `Error:` line for a user's mistake.

The commands themselves are in `colt_core.commands`; this module is the foundation they stand on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from colt_core.distributed import DistContext
from colt_core.errors import UserError
from colt_core.settings import CONTROLS

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def user_errors(run: Any = None) -> Iterator[None]:
    """Turn a `UserError` into click's one `Error: ...` line and exit status 1, without a traceback.

    With `run` (a run in progress: anything with a `path`) the line adds that the run directory keeps what
    finished.
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
        click.option("--overwrite", is_flag=True,
                     help="replace the run in the output directory: once the config, data and weights check out, "
                          "delete everything the old run wrote there (checkpoints, masks, tickets, reports, "
                          "TensorBoard logs) and start afresh; a run that cannot start leaves the old one as it "
                          "was"),
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
                             "compare them with colt compare OUT/seed_*)")(command)
