"""Exporting what a run found: dense and sparse state_dicts of a round's weights, its ticket, sparsity tables,
and optionally ONNX.

Task-agnostic: a front end says how to build its model from a ticket's architecture description, which weights
are exported under which names, how its model goes to ONNX and how the files load elsewhere (an `ExportTarget`,
registered with its task); everything else happens here.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.config import read_yaml
from colt_core.export.errors import ExportError
from colt_core.export.run_tickets import load_round_ticket, start_weights, trained_weights_path
from colt_core.export.slim import SlimTrace, is_channel_mask, save_slim, slim_copy
from colt_core.export.sparse import save_sparse
from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, load_checkpoint
from colt_core.prune.magnitude import PruneGroup
from colt_core.prune.sparsity import format_sparsity_table, sparsity_report
from colt_core.prune.ticket import Ticket, TicketError, check_ticket_fits, save_ticket
from colt_core.registry import task_of_architecture
from colt_core.rundir import RunDir, open_run

log = logging.getLogger(__name__)

SOURCES = ("ticket", "trained")

# Writes a model's ONNX file into the export folder (an example input side, or None for the model's own) and checks
# it; returns the file and one line of what onnxruntime's check found (None: onnxruntime is not installed).
OnnxExport = Callable[[nn.Module, Path, int | None], tuple[Path, str | None]]


def _keep_name(name: str) -> str | None:
    return name


@dataclass(frozen=True)
class ExportView:
    """One exported file (dense, and sparse beside it): which weights under which names.

    `rename` maps a model state_dict key to its name in the exported file, or None to leave it out
    (a detector's backbone view keeps the backbone only, keyed like its torchvision classification model).
    """

    rename: Callable[[str], str | None] = _keep_name
    stem: str = "model"
    description: str = "the model's state_dict"


def _as_is(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


@dataclass
class ExportTarget:
    """What a front end exports: its model (built from the architecture), the main view of its weights
    (`rename`, `stem`, `description`) and further views (`extra_views`, e.g. the whole detector beside its
    backbone). `complete` gives a state_dict what the rebuilt model has and the run's file may lack (the
    batch counters of norm layers torchvision froze), so that it loads strictly. `onnx` writes and checks the
    model's ONNX file (None: the model has no ONNX export); `loading_hints` say how the files load elsewhere.
    `slim` traces the model for its channel couplings (None: the model has no slim export of channel tickets)."""

    model: nn.Module
    output_layers: tuple[str, ...] = ()
    rename: Callable[[str], str | None] = _keep_name
    stem: str = "model"
    description: str = "the model's state_dict"
    extra_views: tuple[ExportView, ...] = ()
    complete: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _as_is
    onnx: OnnxExport | None = None
    loading_hints: tuple[str, ...] = ()
    slim: SlimTrace | None = None

    def views(self) -> list[ExportView]:
        return [ExportView(self.rename, self.stem, self.description), *self.extra_views]


def task_export_target(architecture: Mapping[str, Any]) -> ExportTarget:
    """The export target of a ticket's architecture, as the task it names registered it."""
    return task_of_architecture(architecture).export_target(architecture)


@dataclass
class ExportResult:
    """Files written by `export_run`, their sizes, the sparsity reports, and the model holding the weights
    (`slim`: what the slim export of a channel ticket holds, with `slim_model`; None without one)."""

    out_dir: Path
    files: dict[str, Path]
    sizes: dict[str, int]
    round: int
    source: str
    architecture: dict[str, Any]
    model_report: dict[str, Any]
    exported_report: dict[str, Any]
    model: nn.Module = field(repr=False)
    target: ExportTarget = field(repr=False)
    exported: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    slim: dict[str, Any] | None = None
    slim_model: nn.Module | None = field(repr=False, default=None)

    def sparsity_markdown(self) -> str:
        return sparsity_markdown(self.model_report, self.exported_report)


def sparsity_markdown(model_report: Mapping[str, Any], exported_report: Mapping[str, Any]) -> str:
    """Both sparsity tables of an export: the whole model's prunable weights, then the exported tensors."""
    return "\n".join(["## Model (all prunable weights)", "", format_sparsity_table(dict(model_report)), "",
                      "## Exported weights", "", format_sparsity_table(dict(exported_report)), ""])


def masked_state_dict(state_dict: Mapping[str, torch.Tensor],
                      mask: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """A detached CPU copy of `state_dict` with every pruned weight exactly +0.0."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, tensor in state_dict.items():
        out[name] = tensor.detach().to("cpu", copy=True)
    for name, keep in mask.items():
        if name not in out:
            raise ExportError(f"the mask prunes {name!r}, which the weights do not contain")
        if tuple(keep.shape) != tuple(out[name].shape):
            raise ExportError(f"{name!r}: mask shape {tuple(keep.shape)} but weight shape "
                              f"{tuple(out[name].shape)}")
        out[name].masked_fill_(~keep.to("cpu", torch.bool), 0.0)
    return out


def _renamed_groups(model_report: Mapping[str, Any], renamed: Mapping[str, str]) -> list[PruneGroup]:
    """The model's prune groups restricted to the exported weights, under their exported names."""
    members: dict[str, list[str]] = {}
    for name, row in model_report.get("layers", {}).items():
        if name in renamed and row.get("group"):
            members.setdefault(row["group"], []).append(renamed[name])
    rates = {g: row.get("rate_per_round", 0.0) for g, row in model_report.get("groups", {}).items()}
    return [PruneGroup(g, float(rates.get(g, 0.0)), tuple(names)) for g, names in members.items()]


def _view(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], view: ExportView
          ) -> tuple[OrderedDict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of one view under their exported names, their masks, and the names it renamed."""
    exported: OrderedDict[str, torch.Tensor] = OrderedDict()
    exported_mask: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    for name, tensor in weights.items():
        new = view.rename(name)
        if new is None:
            continue
        exported[new] = tensor
        if name in mask:
            exported_mask[new] = mask[name]
            renamed[name] = new
    return exported, exported_mask, renamed


def _fitting_target(run_dir: Path, ticket: Ticket, make_target: Callable[[Mapping[str, Any]], ExportTarget]
                    ) -> ExportTarget:
    """The target of the ticket's architecture, checked to hold every masked weight with the mask's shape."""
    try:
        target = make_target(ticket.architecture)
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"{run_dir}: cannot build the model of architecture "
                          f"{ticket.architecture.get('name')!r}: {exc}") from None
    try:
        check_ticket_fits(ticket, target.model, target.output_layers,
                          source=f"{run_dir} round {ticket.meta['round']}")
    except TicketError as exc:
        raise ExportError(f"mismatched architecture: {exc}") from None
    return target


def _source_weights(run: RunDir, ticket: Ticket, source: str) -> tuple[Path, Mapping[str, torch.Tensor]]:
    """The file and the weights `source` exports: the round's start weights, or its trained full-data model."""
    r = int(ticket.meta["round"])
    if source != "trained":
        return start_weights(run, r), ticket.init
    weights_path = trained_weights_path(run, r)
    raw = load_checkpoint(weights_path)
    revived = sum(int(torch.count_nonzero(raw[n][~m])) for n, m in ticket.mask.items()
                  if n in raw and raw[n].shape == m.shape)
    if revived:
        # Training re-applies the mask after every step, so this means the file was altered.
        log.warning("%s: %d pruned weights are not zero in the trained model; they are exported as zero",
                    weights_path, revived)
    return weights_path, raw


def _loaded_weights(target: ExportTarget, ticket: Ticket, weights_path: Path,
                    raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masked weights, loaded strictly into the target's model (which then holds them)."""
    weights = target.complete(masked_state_dict(raw, ticket.mask))
    try:
        target.model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"mismatched architecture: {weights_path} does not fit the model built from "
                          f"{ticket.architecture.get('name')!r}: {' '.join(first[:3])}") from None
    return weights


def _write_views(out_dir: Path, weights: Mapping[str, torch.Tensor], ticket: Ticket, target: ExportTarget,
                 meta: Mapping[str, Any]) -> tuple[dict[str, Path], OrderedDict[str, torch.Tensor], dict[str, Any]]:
    """The dense and sparse file of every view; the files, the main view's tensors and its sparsity report."""
    files: dict[str, Path] = {}
    reports: list[dict[str, Any]] = []
    for i, view in enumerate(target.views()):
        exported, exported_mask, renamed = _view(weights, ticket.mask, view)
        if not exported:
            raise ExportError(f"nothing to export: no weight of {ticket.architecture.get('name')!r} is part of "
                              f"{view.description}")
        out_dir.mkdir(parents=True, exist_ok=True)
        keys = ("dense", "sparse") if i == 0 else (view.stem, f"{view.stem}_sparse")
        files[keys[0]], files[keys[1]] = out_dir / f"{view.stem}.pth", out_dir / f"{view.stem}.sparse.pt"
        atomic_save(exported, files[keys[0]])
        save_sparse(exported, files[keys[1]], exported_mask, meta={**meta, "contents": view.description})
        reports.append(sparsity_report(exported_mask, _renamed_groups(ticket.sparsity, renamed)))
        if i == 0:
            main_exported = exported
    return files, main_exported, reports[0]


def _wants_slim(slim: bool | None, run: RunDir, ticket: Ticket, target: ExportTarget) -> bool:
    """Whether to write the slim model: as asked, or (None) when the run searched channels or the mask is one."""
    if slim is False:
        return False
    if target.slim is None:
        if slim:
            raise ExportError(f"{ticket.architecture.get('name')!r} models have no slim export; leave out --slim")
        return False
    if slim:
        return True
    config = read_yaml(run.config) if run.config.is_file() else {}
    prune = config.get("prune") if isinstance(config, Mapping) else None
    if isinstance(prune, Mapping) and prune.get("granularity") == "channel":
        return True
    return is_channel_mask(target.model, ticket.mask)


def _write_slim(out_dir: Path, target: ExportTarget, ticket: Ticket, meta: Mapping[str, Any]
                ) -> tuple[Path, dict[str, Any], nn.Module]:
    """The slim model of a channel ticket (`slim.pt`), what it holds, and the model itself."""
    assert target.slim is not None
    result, difference = slim_copy(target.model, ticket.mask, target.slim)
    info = {"parameters_full": result.parameters_before, "parameters_slim": result.parameters_after,
            "layers_cut": len(result.kept), "relative_difference": difference}
    path = save_slim(out_dir / "slim.pt", ticket.architecture, result, meta={**meta, **info})
    return path, info, result.model


def _write_records(out_dir: Path, files: dict[str, Path], ticket: Ticket, meta: Mapping[str, Any],
                   exported_report: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The ticket, the sparsity tables and the manifest beside the weight files; the sizes of all but the last."""
    run_dir, r, source = Path(meta["run_dir"]), meta["round"], meta["source"]
    files.update(ticket=out_dir / "ticket.pt", sparsity_md=out_dir / "sparsity.md",
                 sparsity_json=out_dir / "sparsity.json", manifest=out_dir / "export.json")
    save_ticket(Ticket(mask=ticket.mask, init=ticket.init, architecture=ticket.architecture,
                       sparsity=ticket.sparsity, meta={**ticket.meta, "exported_from": meta["run_dir"]}),
                files["ticket"])
    title = f"# Sparsity of {run_dir.name}, round {r} ({source})\n\n"
    atomic_write_text(title + sparsity_markdown(ticket.sparsity, exported_report), files["sparsity_md"])
    atomic_write_json({"round": r, "source": source, "model": ticket.sparsity, "exported": exported_report},
                      files["sparsity_json"])
    sizes = {k: p.stat().st_size for k, p in files.items() if k != "manifest"}
    atomic_write_json({**meta, "files": {k: p.name for k, p in files.items()}, "bytes": sizes,
                       "sparsity": ticket.sparsity.get("overall", {}).get("sparsity"),
                       "exported_sparsity": exported_report["overall"]["sparsity"], **(extra or {})},
                      files["manifest"])
    return sizes


def export_run(run_dir: str | Path | RunDir, out_dir: str | Path,
               make_target: Callable[[Mapping[str, Any]], ExportTarget] = task_export_target, *,
               round: int | None = None, source: str = "ticket",
               architecture: Mapping[str, Any] | None = None, slim: bool | None = None) -> ExportResult:
    """Export one round of a run (or its final ticket): dense and sparse weights, the ticket, sparsity tables.

    `source="ticket"`: the weights are m ⊙ θ0 (the ticket, for retraining); `"trained"`: the trained
    full-data model of that round's evaluation, with the mask re-applied so pruned weights are exactly 0.
    `make_target` rebuilds the model of the ticket's architecture (default: the target its task registered).
    `slim`: also write `slim.pt`, the model with only the channels a channel ticket keeps (`load_slim` reads
    it); None: when the run's config says `prune.granularity: channel` or the mask is a channel mask; True:
    always (a mask that is not a channel mask is refused); False: never.
    """
    if source not in SOURCES:
        raise ExportError(f"source must be one of {SOURCES}, got {source!r}")
    run = open_run(run_dir)
    if Path(out_dir).resolve() == run.path.resolve():
        raise ExportError(f"--out {out_dir} is the run directory itself, whose ticket.pt the export would "
                          "replace; choose another folder, e.g. RUN_DIR/export")
    ticket = load_round_ticket(run, round, architecture)
    r = int(ticket.meta["round"])
    target = _fitting_target(run.path, ticket, make_target)
    weights = _loaded_weights(target, ticket, *_source_weights(run, ticket, source))

    out_dir = Path(out_dir)
    meta = {"run_dir": str(run.path), "round": r, "source": source, "architecture": ticket.architecture,
            "contents": target.description}
    files, main_exported, exported_report = _write_views(out_dir, weights, ticket, target, meta)
    slim_info, slim_model = None, None
    if _wants_slim(slim, run, ticket, target):
        files["slim"], slim_info, slim_model = _write_slim(out_dir, target, ticket, meta)
    sizes = _write_records(out_dir, files, ticket, meta, exported_report,
                           {"slim": slim_info} if slim_info else None)
    return ExportResult(out_dir=out_dir, files=files, sizes=sizes, round=r, source=source,
                        architecture=dict(ticket.architecture), model_report=ticket.sparsity,
                        exported_report=exported_report, model=target.model, target=target,
                        exported=dict(main_exported), slim=slim_info, slim_model=slim_model)


def write_onnx(result: ExportResult, size: int | None = None) -> str:
    """The ONNX file of an export's model beside its other files (`size`: the example input side, None for the
    model's own), recorded in `result.files`/`sizes`; a line naming the file and what was checked."""
    if result.target.onnx is None:
        raise ExportError(f"{result.out_dir}: the weights are exported, but {result.architecture.get('name')!r} "
                          "models have no ONNX export; leave out --onnx")
    path, check = result.target.onnx(result.model, result.out_dir, size)
    result.files["onnx"] = path
    result.sizes["onnx"] = path.stat().st_size
    return f"{path} ({check or 'not run: onnxruntime is not installed'})"


def write_slim_onnx(result: ExportResult, size: int | None = None) -> str | None:
    """The ONNX file of an export's slim model (`slim.onnx`), checked like the full one; None without a slim
    model. Recorded in `result.files`/`sizes`; a line naming the file and what was checked."""
    if result.slim_model is None or result.target.onnx is None:
        return None
    staging = result.out_dir / ".slim_onnx"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        written, check = result.target.onnx(result.slim_model, staging, size)
        path = result.out_dir / "slim.onnx"
        os.replace(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.files["slim_onnx"] = path
    result.sizes["slim_onnx"] = path.stat().st_size
    return f"{path} ({check or 'not run: onnxruntime is not installed'})"
