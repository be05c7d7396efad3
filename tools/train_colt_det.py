"""Find a COLT (or LTH) ticket of a detector (Faster R-CNN VGG16 or a torchvision family) on Pascal VOC or
COCO-format data and report per-class AP, or train a given ticket (or one of its controls).

    python tools/train_colt_det.py --cfg voc_vgg16.yaml [--set train.epochs=10] [--out DIR] [--resume|--overwrite]
    python tools/train_colt_det.py --cfg voc_vgg16.yaml --ticket runs/voc_vgg16/ticket.pt --control random_prune \
        --out runs/voc_vgg16_random_prune
    torchrun --standalone --nproc_per_node=K tools/train_colt_det.py --cfg voc_vgg16.yaml   # K processes (GPUs)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core import cli  # noqa: E402
from colt_core.config import to_dict  # noqa: E402
from colt_core.distributed import DistContext, distributed_session  # noqa: E402
from colt_core.prune.ticket import Ticket  # noqa: E402
from colt_core.report import (  # noqa: E402
    given_ticket_markdown,
    per_class_columns,
    per_class_markdown,
    rounds_markdown,
    test_set_counts,
    test_set_line,
    test_set_note,
    write_given_ticket_report,
)
from colt_det.coco import check_coco_files  # noqa: E402
from colt_det.config import DetRunConfig  # noqa: E402
from colt_det.pretrained import PretrainedWeights, resolve_pretrained  # noqa: E402
from colt_det.report import report_style  # noqa: E402
from colt_det.voc import check_voc_sets  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cli.run_options
@cli.ticket_options
@cli.seeds_option
def main(cfg_name: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
         verbose: bool, ticket_path: str | None, control: str | None, seeds: list[int] | None) -> None:
    """Run COLT/LTH rounds for a detector (or train a given ticket); write the run directory and report.

    Under torchrun (`torchrun --nproc_per_node=K tools/train_colt_det.py ...`) the K processes share the work.
    """
    with distributed_session() as dist:
        cli.configure_logging(verbose, dist)
        with cli.user_errors():
            base, ticket = cli.load_run(DetRunConfig, cfg_name, overrides, out, ROOT / "configs",
                                        ticket=ticket_path, control=control)
            data = base.data
            if data.synthetic is None and data.format == "voc":  # a missing dataset is named before any weights
                check_voc_sets(data.root, data.train_sets)
                check_voc_sets(data.root, data.test_sets)
            elif data.synthetic is None:
                train, test = data.coco_pairs()
                check_coco_files([*train, test])
            # Before any work: weights that cannot be had stop the run here, with nothing written.
            weights = resolve_pretrained(base.model, dist=dist)
            base.model.pretrained_sha256 = weights.sha256 if weights else None  # recorded: --resume refuses others
        cli.run_seeds(base, seeds, dist,
                      lambda cfg: run_one(cfg, ticket, weights, resume=resume, overwrite=overwrite, dist=dist))


def run_one(cfg: DetRunConfig, ticket: Ticket | None, weights: PretrainedWeights | None, *, resume: bool,
            overwrite: bool, dist: DistContext | None) -> None:
    """One run of the tool: a ticket search, or the training of a given ticket (or its control)."""
    with cli.user_errors():
        run = cli.open_run_dir(cfg, resume=resume, overwrite=overwrite, dist=dist)
        from colt_det.task import DetectionTask

        task = DetectionTask(cfg, dist=dist, pretrained=weights)
    main_rank = dist is None or dist.is_main
    style = report_style(cfg.eval.metric)
    if ticket is not None:
        from colt_core.run.transfer import train_ticket

        with cli.user_errors():  # most of what can go wrong here is the ticket the user brought
            evaluation = train_ticket(task, cli.make_trainer(task, cfg, run), ticket, cfg.ticket, run,
                                      seed=cfg.seed, config_dict=to_dict(cfg), dist=dist, control=cfg.control)
        if main_rank:
            write_given_ticket_report(run, evaluation, task.class_names, style)
            click.echo("\n" + given_ticket_markdown(evaluation))
            click.echo(f"report: {run.report}")
        return
    notes = [f"The backbone started from pretrained weights: {weights.describe()}." if weights else
             "Trained from scratch: no pretrained weights (model.pretrained_backbone: none)."]
    with cli.user_errors(run):
        result = cli.find_ticket(task, cfg, run, style, dist, notes)
    if not main_rank:
        return
    click.echo("\n" + cli.ticket_line(result))
    click.echo(rounds_markdown(result.summary, style.extra_columns))
    columns = per_class_columns(result.summary)
    if columns:
        table = per_class_markdown(columns, task.class_names, digits=style.digits, mean_row=style.mean_row,
                                   counts=test_set_counts(result.summary)[1], count_title=style.count_title)
        click.echo(f"per-class AP (%), {cfg.eval.metric}:\n{table}")
    for line in (test_set_note(result.summary), test_set_line(result.summary, style.count_title)):
        if line:
            click.echo(line)
    click.echo(f"report: {run.report}")


if __name__ == "__main__":
    main()
