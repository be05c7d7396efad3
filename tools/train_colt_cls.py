"""Find a COLT (or LTH) ticket of an image classifier and report its accuracy, or train a given ticket.

    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml [--set train.epochs=10] [--out DIR] \
        [--resume|--overwrite]
    python tools/train_colt_cls.py --cfg cifar10_resnet18.yaml \
        --ticket runs/tinyimagenet_resnet18/ticket.pt --out runs/tinyimagenet_to_cifar10
    torchrun --standalone --nproc_per_node=K tools/train_colt_cls.py --cfg cifar10_resnet18.yaml  # K processes
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_cls.config import ClsRunConfig  # noqa: E402
from colt_cls.datasets import DatasetError  # noqa: E402
from colt_cls.report import EXTRA_COLUMNS, transfer_markdown, write_report, write_transfer_report  # noqa: E402
from colt_core.config import ConfigError, load_config, to_dict  # noqa: E402
from colt_core.distributed import distributed_session, run_on_main  # noqa: E402
from colt_core.io import CheckpointError  # noqa: E402
from colt_core.partition import PartitionError  # noqa: E402
from colt_core.pruning import LayerCollapseError  # noqa: E402
from colt_core.report import rounds_markdown  # noqa: E402
from colt_core.rounds import RoundLoop, RunDirError, prepare_run_dir  # noqa: E402
from colt_core.ticket import TicketError  # noqa: E402

# Bad input anywhere (config, dataset, run directory, ticket, explicit split) and a diverged training end
# the command with one line naming the cause instead of a traceback.
USER_ERRORS = (ConfigError, DatasetError, RunDirError, TicketError, CheckpointError, PartitionError,
               LayerCollapseError, FloatingPointError, FileExistsError)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cfg", "cfg_name", required=True, help="config path, or a file name under configs/")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config value (repeatable)")
@click.option("--out", type=click.Path(file_okay=False),
              help="run directory (default: the config's output_dir)")
@click.option("--resume", is_flag=True, help="continue the run in the output directory")
@click.option("--overwrite", is_flag=True, help="replace the run in the output directory")
@click.option("--ticket", "ticket_path", type=click.Path(dir_okay=False),
              help="train this ticket file (e.g. found on another dataset) on the config's data instead of "
                   "finding a ticket")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
         ticket_path: str | None, verbose: bool) -> None:
    """Run COLT/LTH rounds for an image classifier (or train a ticket); write the run directory and report.

    Under torchrun (`torchrun --nproc_per_node=K tools/train_colt_cls.py ...`) the K processes share the work.
    """
    with distributed_session() as dist:
        rank = f"[rank {dist.rank}] " if dist is not None else ""
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format=f"%(asctime)s {rank}%(message)s", datefmt="%H:%M:%S")
        main_rank = dist is None or dist.is_main
        try:
            cfg = load_config(ClsRunConfig, cfg_name, overrides, configs_dir=ROOT / "configs")
            if out is not None:
                cfg.output_dir = out
            if ticket_path is not None:
                cfg.ticket = str(Path(ticket_path).resolve())
            if cfg.ticket is not None and not Path(cfg.ticket).is_file():
                raise TicketError(f"--ticket {cfg.ticket}: no such file")
            config = to_dict(cfg)
            run_dir = run_on_main(dist, prepare_run_dir, cfg.output_dir, config, resume=resume, overwrite=overwrite)
            from colt_cls.trainer import ClassificationTrainer, train_ticket

            trainer = ClassificationTrainer(cfg, run_dir, dist=dist)
            names = list(trainer.class_names)
            if cfg.ticket is not None:
                metrics = train_ticket(trainer, cfg.ticket, run_dir, seed=cfg.seed, config_dict=config, dist=dist)
                if main_rank:
                    report = write_transfer_report(run_dir, metrics, names, cfg.data.name)
                    click.echo("\n" + transfer_markdown(metrics))
                    click.echo(f"report: {report}")
                return

            def on_update(summary: dict) -> None:
                write_report(run_dir, summary, names)

            result = RoundLoop(trainer, cfg.prune, cfg.split, seed=cfg.seed, run_dir=run_dir, config_dict=config,
                               on_update=on_update, dist=dist).run()
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
        if not main_rank:
            return
    summary = {"method": cfg.prune.method, "partitions": cfg.prune.n_partitions, "rounds": result.rounds}
    report = write_report(run_dir, summary, names)
    final = result.rounds[-1]
    click.echo(f"\nticket: {run_dir / 'ticket.pt'}  sparsity {100 * final['sparsity']:.2f}% of prunable "
               f"weights (prune rate {100 * final['prune_rate']:.2f}% of all parameters) after "
               f"{final['round']} round(s)")
    click.echo(rounds_markdown(summary, EXTRA_COLUMNS))
    click.echo(f"report: {report}")


if __name__ == "__main__":
    main()
