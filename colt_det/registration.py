"""The detection task as the layers above the engine find it: registered as "detection"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from colt_core.distributed import DistContext
from colt_core.registry import TaskEntry, register_task
from colt_core.train.task import Task
from colt_det.config import DetRunConfig
from colt_det.pretrained import PretrainedWeights


def prepare(cfg: DetRunConfig, dist: DistContext | None) -> PretrainedWeights | None:
    """Before any work: a missing dataset is named before any weights, and weights that cannot be had stop the
    run with nothing written. Records the weights' digest in the config, so --resume refuses other ones."""
    from colt_det.pretrained import resolve_pretrained

    data = cfg.data
    if data.synthetic is None and data.format == "voc":
        from colt_det.voc import check_voc_sets

        check_voc_sets(data.root, data.train_sets)
        check_voc_sets(data.root, data.test_sets)
    elif data.synthetic is None:
        from colt_det.coco import check_coco_files

        train, test = data.coco_pairs()
        check_coco_files([*train, test])
    weights = resolve_pretrained(cfg.model, dist=dist)
    cfg.model.pretrained_sha256 = weights.sha256 if weights else None
    return weights


def build(cfg: DetRunConfig, dist: DistContext | None, weights: PretrainedWeights | None) -> Task:
    from colt_det.task import DetectionTask

    return DetectionTask(cfg, dist=dist, pretrained=weights)


def notes(cfg: DetRunConfig, weights: PretrainedWeights | None) -> list[str]:
    """The report's line on where the backbone started."""
    return [f"The backbone started from pretrained weights: {weights.describe()}." if weights else
            "Trained from scratch: no pretrained weights (model.pretrained_backbone: none)."]


def report_style(config: Mapping[str, Any]) -> Any:
    from colt_det.report import report_style as style_for_metric

    return style_for_metric((config.get("eval") or {}).get("metric", "voc07"))


def report_figure(run: Any, summary: Any) -> Any:
    from colt_det.report import report_figure as draw

    return draw(run, summary)


def export_target(architecture: Mapping[str, Any]) -> Any:
    from colt_det.export import detection_export_target

    return detection_export_target(architecture)


def architecture_from_config(config: Mapping[str, Any], num_classes: int | None = None) -> dict[str, Any]:
    from colt_det.export import architecture_from_config as from_config

    return from_config(config, num_classes)


def _commands() -> dict[str, Any]:
    from colt_det.commands import eval_command

    return {"eval": eval_command}


def _datasets() -> dict[str, Any]:
    from colt_det.commands import make_data_command

    return {"voc": make_data_command("voc"), "coco": make_data_command("coco")}


ENTRY = register_task(TaskEntry(
    name="detection", config=DetRunConfig, build=build, report_style=report_style, export_target=export_target,
    prepare=prepare, notes=notes, architecture_from_config=architecture_from_config,
    commands=_commands(), datasets=_datasets(), report_figure=report_figure))
