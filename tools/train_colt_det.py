"""Find a COLT (or LTH) ticket of Faster R-CNN VGG16 on Pascal VOC and report per-class mAP.

    python tools/train_colt_det.py --cfg voc_vgg16.yaml [--set train.epochs=10] [--out DIR] [--resume|--overwrite]
    torchrun --standalone --nproc_per_node=K tools/train_colt_det.py --cfg voc_vgg16.yaml   # K processes (GPUs)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core import cli  # noqa: E402
from colt_core.distributed import distributed_session  # noqa: E402
from colt_core.report import per_class_columns, per_class_markdown, rounds_markdown, test_set_note  # noqa: E402
from colt_det.coco import check_coco_files  # noqa: E402
from colt_det.config import DetRunConfig  # noqa: E402
from colt_det.pretrained import resolve_pretrained  # noqa: E402
from colt_det.report import report_style  # noqa: E402
from colt_det.voc import check_voc_sets  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cli.run_options
def main(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
         verbose: bool) -> None:
    """Run COLT/LTH rounds for Faster R-CNN VGG16 and write the run directory and report.

    Under torchrun (`torchrun --nproc_per_node=K tools/train_colt_det.py ...`) the K processes share the work.
    """
    with distributed_session() as dist:
        cli.configure_logging(verbose, dist)
        with cli.user_errors():
            cfg = cli.load_run_config(DetRunConfig, cfg_name, overrides, out, ROOT / "configs")
            data = cfg.data
            if data.synthetic is None and data.format == "voc":  # a missing dataset is named before any weights
                check_voc_sets(data.root, data.train_sets)
                check_voc_sets(data.root, data.test_sets)
            elif data.synthetic is None:
                train, test = data.coco_pairs()
                check_coco_files([*train, test])
            # Before any work: weights that cannot be had stop the run here, with nothing written.
            weights = resolve_pretrained(cfg.model, dist=dist)
            cfg.model.pretrained_sha256 = weights.sha256 if weights else None  # recorded: --resume refuses others
            run = cli.open_run_dir(cfg, resume=resume, overwrite=overwrite, dist=dist)
            from colt_det.task import DetectionTask

            task = DetectionTask(cfg, dist=dist, pretrained=weights)
        notes = [f"The backbone started from pretrained weights: {weights.describe()}." if weights else
                 "Trained from scratch: no pretrained weights (model.pretrained_backbone: none)."]
        style = report_style(cfg.eval.metric)
        with cli.user_errors(run):
            result = cli.find_ticket(task, cfg, run, style, dist, notes)
        if dist is not None and not dist.is_main:
            return
    click.echo("\n" + cli.ticket_line(result))
    click.echo(rounds_markdown(result.summary, style.extra_columns))
    columns = per_class_columns(result.summary)
    if columns:
        table = per_class_markdown(columns, task.class_names, digits=style.digits, mean_row=style.mean_row)
        click.echo(f"per-class AP (%), {cfg.eval.metric}:\n{table}")
    note = test_set_note(result.summary)
    if note:
        click.echo(note)
    click.echo(f"report: {run.report}")


if __name__ == "__main__":
    main()
