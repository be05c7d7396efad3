"""Find a COLT (or LTH) ticket of an image classifier and report its accuracy, or train a given ticket.

    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml [--set train.epochs=10] [--out DIR] \
        [--resume|--overwrite]
    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml \
        --ticket runs/tinyimagenet_resnet18/ticket.pt --out runs/tinyimagenet_to_cifar10
    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml --ticket runs/cifar10_resnet18/ticket.pt \
        --control random_prune --out runs/cifar10_resnet18_random_prune
    torchrun --standalone --nproc_per_node=K tools/train_colt_cls.py --cfg cifar10_resnet18.yaml  # K processes
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_cls.config import ClsRunConfig  # noqa: E402
from colt_cls.report import REPORT, transfer_markdown, write_transfer_report  # noqa: E402
from colt_core import cli  # noqa: E402
from colt_core.config import to_dict  # noqa: E402
from colt_core.distributed import DistContext, distributed_session  # noqa: E402
from colt_core.prune.ticket import Ticket  # noqa: E402
from colt_core.report import rounds_markdown  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cli.run_options
@cli.ticket_options
@cli.seeds_option
def main(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
         verbose: bool, ticket_path: str | None, control: str | None, seeds: list[int] | None) -> None:
    """Run COLT/LTH rounds for an image classifier (or train a ticket); write the run directory and report.

    Under torchrun (`torchrun --nproc_per_node=K tools/train_colt_cls.py ...`) the K processes share the work.
    """
    with distributed_session() as dist:
        cli.configure_logging(verbose, dist)
        with cli.user_errors():
            base, ticket = cli.load_run(ClsRunConfig, cfg_name, overrides, out, ROOT / "configs",
                                        ticket=ticket_path, control=control)
        cli.run_seeds(base, seeds, dist,
                      lambda cfg: run_one(cfg, ticket, resume=resume, overwrite=overwrite, dist=dist))


def run_one(cfg: ClsRunConfig, ticket: Ticket | None, *, resume: bool, overwrite: bool,
            dist: DistContext | None) -> None:
    """One run of the tool: a ticket search, or the training of a given ticket (or its control)."""
    main_rank = dist is None or dist.is_main
    with cli.user_errors():
        run = cli.open_run_dir(cfg, resume=resume, overwrite=overwrite, dist=dist)
        from colt_cls.task import ClassificationTask

        task = ClassificationTask(cfg, dist=dist)
    if ticket is not None:
        from colt_core.run.transfer import train_ticket

        with cli.user_errors():  # most of what can go wrong here is the ticket the user brought
            evaluation = train_ticket(task, cli.make_trainer(task, cfg, run), ticket, cfg.ticket, run,
                                      seed=cfg.seed, config_dict=to_dict(cfg), dist=dist, control=cfg.control)
        if main_rank:
            write_transfer_report(run, evaluation, task.class_names, cfg.data.name)
            click.echo("\n" + transfer_markdown(evaluation))
            click.echo(f"report: {run.report}")
        return
    with cli.user_errors(run):
        result = cli.find_ticket(task, cfg, run, REPORT, dist)
    if not main_rank:
        return
    click.echo("\n" + cli.ticket_line(result))
    click.echo(rounds_markdown(result.summary, REPORT.extra_columns))
    click.echo(f"report: {run.report}")


if __name__ == "__main__":
    main()
