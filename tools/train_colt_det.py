"""Find a COLT (or LTH) ticket of Faster R-CNN VGG16 on Pascal VOC and report per-class mAP.

    python tools/train_colt_det.py --cfg voc_vgg16.yaml [--set train.epochs=10] [--out DIR] [--resume|--overwrite]
    torchrun --standalone --nproc_per_node=K tools/train_colt_det.py --cfg voc_vgg16.yaml   # K processes (GPUs)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core.config import ConfigError, load_config, to_dict  # noqa: E402
from colt_core.distributed import distributed_session, run_on_main  # noqa: E402
from colt_core.io import CheckpointError  # noqa: E402
from colt_core.pruning import LayerCollapseError  # noqa: E402
from colt_core.rounds import RoundLoop, RunDirError, prepare_run_dir  # noqa: E402
from colt_det.config import DetRunConfig  # noqa: E402
from colt_det.report import per_class_columns, per_class_markdown, write_report  # noqa: E402
from colt_det.voc import VOCDataError  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cfg", "cfg_name", required=True, help="config path, or a file name under configs/")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config value (repeatable)")
@click.option("--out", type=click.Path(file_okay=False), help="run directory (default: the config's output_dir)")
@click.option("--resume", is_flag=True, help="continue the run in the output directory")
@click.option("--overwrite", is_flag=True, help="replace the run in the output directory")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
         verbose: bool) -> None:
    """Run COLT/LTH rounds for Faster R-CNN VGG16 and write the run directory and report.

    Under torchrun (`torchrun --nproc_per_node=K tools/train_colt_det.py ...`) the K processes share the work.
    """
    with distributed_session() as dist:
        rank = f"[rank {dist.rank}] " if dist is not None else ""
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format=f"%(asctime)s {rank}%(message)s", datefmt="%H:%M:%S")
        try:
            cfg = load_config(DetRunConfig, cfg_name, overrides, configs_dir=ROOT / "configs")
            if out is not None:
                cfg.output_dir = out
            config = to_dict(cfg)
            run_dir = run_on_main(dist, prepare_run_dir, cfg.output_dir, config, resume=resume, overwrite=overwrite)
            from colt_det.trainer import DetectionTrainer

            trainer = DetectionTrainer(cfg, run_dir, dist=dist)
        except (ConfigError, RunDirError, VOCDataError) as exc:
            raise click.ClickException(str(exc)) from None
        names = list(trainer.class_names)

        def on_update(summary: dict) -> None:
            write_report(run_dir, summary, names)

        try:
            result = RoundLoop(trainer, cfg.prune, cfg.split, seed=cfg.seed, run_dir=run_dir, config_dict=config,
                               on_update=on_update, dist=dist).run()
        except (LayerCollapseError, VOCDataError, CheckpointError, ConfigError) as exc:
            raise click.ClickException(f"{exc}\n(the run directory {run_dir} keeps what finished; fix the cause "
                                       "and continue with --resume)") from None
        if dist is not None and not dist.is_main:
            return
    summary = {"method": cfg.prune.method, "partitions": cfg.prune.n_partitions, "rounds": result.rounds}
    report = write_report(run_dir, summary, names)
    final = result.rounds[-1]
    click.echo(f"\nticket: {run_dir / 'ticket.pt'}  sparsity {100 * final['sparsity']:.2f}% of prunable weights "
               f"(prune rate {100 * final['prune_rate']:.2f}% of all parameters) after {final['round']} round(s)")
    columns = per_class_columns(summary)
    if columns:
        click.echo(f"per-class AP (%), {cfg.eval.metric}:\n" + per_class_markdown(columns, names))
    click.echo(f"report: {report}")


if __name__ == "__main__":
    main()
