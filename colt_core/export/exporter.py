"""Exporting what a run found: dense and sparse state_dicts, ticket files, and reading a run directory.

Task-agnostic: a front end says how to build its model from a ticket's architecture description and
which weights are exported under which names (an `ExportTarget`); everything else happens here.

Sparse files (`save_sparse` / `load_sparse`) keep only the surviving weights of each masked tensor and
their positions, as a bit mask packed with `numpy.packbits` or as int32 flat indices, whichever is smaller;
other tensors (biases, norm statistics) are stored as they are. They load with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colt_core.config import read_yaml
from colt_core.errors import UserError
from colt_core.io import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_json,
)
from colt_core.prune.magnitude import PruneGroup
from colt_core.prune.sparsity import format_sparsity_table, sparsity_report
from colt_core.prune.ticket import (
    Ticket,
    TicketError,
    check_ticket_fits,
    read_ticket_header,
    save_ticket,
    validate_ticket,
)
from colt_core.rundir import RunDir, TrainingDir, open_run, read_evaluation, read_summary

log = logging.getLogger(__name__)

SPARSE_FORMAT = "colt-sparse-state-dict"
SPARSE_VERSION = 1
SOURCES = ("ticket", "trained")


class ExportError(UserError, ValueError):
    """A run directory, round or model cannot be exported as asked."""


class SparseFormatError(UserError, ValueError):
    """A sparse state_dict file is malformed."""


# ----- sparse state_dicts --------------------------------------------------------------------------
def _sparse_record(name: str, tensor: torch.Tensor, keep: torch.Tensor | None) -> dict[str, Any]:
    """The smallest encoding of one tensor: a packed bit mask + values, int32 indices + values, or dense.

    A masked tensor always keeps its positions (bit mask or indices), so its mask reads back exactly.
    """
    tensor = tensor.detach().cpu()
    dense = {"encoding": "dense", "tensor": tensor.clone()}
    masked = keep is not None
    if keep is None:
        if not tensor.is_floating_point() or tensor.dim() == 0:
            return dense
        keep = tensor != 0
    elif tuple(keep.shape) != tuple(tensor.shape):
        raise ValueError(f"{name}: mask shape {tuple(keep.shape)} differs from the tensor's "
                         f"{tuple(tensor.shape)}")
    keep = keep.detach().cpu().bool()
    flat, flat_keep = tensor.reshape(-1), keep.reshape(-1)
    if bool((flat[~flat_keep] != 0).any()):
        raise ValueError(f"{name}: weights outside the mask are not zero; apply the mask before saving")
    n, alive, item = flat.numel(), int(flat_keep.sum()), tensor.element_size()
    index_bytes = 4 if n < 2**31 else 8
    sizes = {"dense": n * item, "bitmask": math.ceil(n / 8) + alive * item,
             "indices": alive * (index_bytes + item)}
    if masked:
        del sizes["dense"]
    encoding = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    if encoding == "dense":
        return dense
    values = flat[flat_keep].clone()
    record: dict[str, Any] = {"encoding": encoding, "shape": list(tensor.shape), "values": values}
    if encoding == "bitmask":
        record["bits"] = torch.from_numpy(np.packbits(flat_keep.numpy()))
    else:
        dtype = torch.int32 if index_bytes == 4 else torch.int64
        record["indices"] = flat_keep.nonzero().flatten().to(dtype)
    return record


def encode_sparse(state_dict: Mapping[str, torch.Tensor],
                  mask: Mapping[str, torch.Tensor] | None = None) -> OrderedDict[str, dict[str, Any]]:
    """Encode a state_dict: with a `mask`, the tensors it names keep exactly its positions (a surviving
    weight that is exactly zero stays a survivor) and every other tensor is stored as it is; without one,
    the positions are the non-zeros of each floating-point tensor, where that is smaller.
    """
    if mask is None:
        return OrderedDict((name, _sparse_record(name, t, None)) for name, t in state_dict.items())
    unknown = sorted(set(mask) - set(state_dict))
    if unknown:
        raise ValueError(f"mask names tensors the state_dict does not hold: {unknown[:5]}")
    return OrderedDict((name, _sparse_record(name, t, mask[name]) if name in mask
                        else {"encoding": "dense", "tensor": t.detach().cpu().clone()})
                       for name, t in state_dict.items())


def save_sparse(state_dict: Mapping[str, torch.Tensor], path: str | Path,
                mask: Mapping[str, torch.Tensor] | None = None,
                meta: Mapping[str, Any] | None = None) -> Path:
    """Write the compact sparse file of a state_dict atomically (see `encode_sparse`)."""
    data = {"format": SPARSE_FORMAT, "version": SPARSE_VERSION, "tensors": encode_sparse(state_dict, mask),
            "meta": dict(meta or {})}
    atomic_save(data, path)
    return Path(path)


def _read_sparse(path: str | Path) -> Mapping[str, Any]:
    data = load_checkpoint(path)
    if not isinstance(data, Mapping) or data.get("format") != SPARSE_FORMAT:
        raise SparseFormatError(f"{path}: not a COLT sparse state_dict file "
                                "(the format colt_core.export.save_sparse writes)")
    if data.get("version") != SPARSE_VERSION:
        raise SparseFormatError(f"{path}: sparse format version {data.get('version')!r}; this code reads "
                                f"version {SPARSE_VERSION}")
    if not isinstance(data.get("tensors"), Mapping):
        raise SparseFormatError(f"{path}: has no 'tensors' mapping")
    return data


def _decode(path: str | Path, name: str, record: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dense tensor of one record and its survivor mask (None for a dense record)."""
    def bad(why: str) -> SparseFormatError:
        return SparseFormatError(f"{path}: tensor {name!r}: {why}; the file is damaged, export it again")

    if not isinstance(record, Mapping) or record.get("encoding") not in ("dense", "bitmask", "indices"):
        raise bad("unknown encoding")
    if record["encoding"] == "dense":
        if not torch.is_tensor(record.get("tensor")):
            raise bad("dense record without a tensor")
        return record["tensor"], None
    shape, values = record.get("shape"), record.get("values")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise bad(f"invalid shape {shape!r}")
    if not torch.is_tensor(values) or values.dim() != 1:
        raise bad("values must be a 1-D tensor")
    n = math.prod(shape)
    if record["encoding"] == "bitmask":
        bits = record.get("bits")
        if not torch.is_tensor(bits) or bits.dtype != torch.uint8 or bits.numel() != math.ceil(n / 8):
            raise bad(f"bit mask must be {math.ceil(n / 8)} uint8 bytes")
        keep = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
    else:
        indices = record.get("indices")
        integer = torch.is_tensor(indices) and indices.dtype in (torch.int32, torch.int64)
        if not integer or indices.dim() != 1:
            raise bad("indices must be a 1-D int32/int64 tensor")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
            raise bad(f"indices outside 0..{n - 1}")
        keep = torch.zeros(n, dtype=torch.bool)
        keep[indices.long()] = True
        if int(keep.sum()) != indices.numel():
            raise bad("repeated indices")
    if int(keep.sum()) != values.numel():
        raise bad(f"{int(keep.sum())} positions but {values.numel()} values")
    flat = torch.zeros(n, dtype=values.dtype)
    flat[keep] = values
    return flat.reshape(shape), keep.reshape(shape)


def load_sparse(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Read a sparse file back into the dense state_dict it was written from (identical tensors)."""
    data = _read_sparse(path)
    return OrderedDict((name, _decode(path, name, rec)[0]) for name, rec in data["tensors"].items())


def load_sparse_mask(path: str | Path) -> dict[str, torch.Tensor]:
    """The survivor mask of every tensor stored with its positions (all masked tensors of an export)."""
    data = _read_sparse(path)
    masks = {}
    for name, rec in data["tensors"].items():
        keep = _decode(path, name, rec)[1]
        if keep is not None:
            masks[name] = keep
    return masks


# ----- masks applied to state_dicts -----------------------------------------------------------------
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


# ----- run directories ------------------------------------------------------------------------------
def _rounds_text(rounds: Sequence[int]) -> str:
    return ", ".join(map(str, rounds)) if rounds else "none"


def _start_weights(run: RunDir, r: int) -> Path:
    return run.start_weights(r, read_yaml(run.config) if run.config.is_file() else {})


def load_round_ticket(run: RunDir, round: int | None = None,
                      architecture: Mapping[str, Any] | None = None) -> Ticket:
    """The ticket of one round (its mask + its start weights: θ0, or with late rewinding the rewind point), or
    the run's final ticket when `round` is None.

    `architecture` describes the model when the run is unfinished (it has no ticket.pt yet). The
    returned ticket's meta holds the run's meta plus `round` and `run_dir`.
    """
    rounds = run.rounds()
    finished = run.is_finished()
    header = read_ticket_header(run.ticket) if finished else None
    if round is None:
        if header is None:
            raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt); choose one of its rounds "
                              f"with --round N (rounds on disk: {_rounds_text(rounds)}) or finish it "
                              "with --resume")
        round = int(header["meta"].get("rounds", rounds[-1] if rounds else 0))
    if round not in rounds:
        state = "" if finished else " (the run is unfinished: no ticket.pt)"
        raise ExportError(f"{run.path}: round {round} does not exist{state}; rounds on disk: "
                          f"{_rounds_text(rounds)}")
    rdir = run.round(round)
    mask = load_checkpoint(rdir.mask)
    init = load_checkpoint(_start_weights(run, round))
    if header is not None:
        arch, meta = header["architecture"], dict(header["meta"])
    elif architecture is not None:
        arch, meta = dict(architecture), {}
    else:
        raise ExportError(f"{run.path}: the run is unfinished (no ticket.pt) and no architecture "
                          "description was given; finish the run with --resume, or pass the architecture")
    if run.summary.is_file():
        summary = read_summary(run)
        meta.setdefault("method", summary.method)
        meta.setdefault("partitions", summary.partitions)
    sparsity = read_json(rdir.sparsity) if rdir.sparsity.is_file() else sparsity_report(mask)
    final_round = header["meta"].get("rounds") if header is not None else None
    meta.update(round=round, run_dir=str(run.path), final=round == final_round)
    ticket = Ticket(mask=dict(mask), init=dict(init), architecture=dict(arch), sparsity=sparsity, meta=meta)
    try:
        validate_ticket(ticket, source=str(rdir.mask))
    except TicketError as exc:
        raise ExportError(str(exc)) from None
    return ticket


def evaluated_rounds(run: RunDir) -> list[int]:
    """Rounds whose ticket was trained on the full data and evaluated."""
    return [r for r in run.rounds() if run.round(r).eval.metrics.is_file()]


def trained_weights_path(run: RunDir, round: int) -> Path:
    """The trained full-data model of a round's ticket evaluation (LTH rounds may reuse their training)."""
    files = run.round(round).eval
    if files.model.is_file():
        return files.model
    if files.metrics.is_file():
        reused = read_evaluation(files).reused
        if reused and TrainingDir(run.resolve(reused)).model.is_file():
            return TrainingDir(run.resolve(reused)).model
    evaluated = [r for r in evaluated_rounds(run) if r != round]
    raise ExportError(f"{run.path}: round {round} has no trained full-data model (its ticket was not "
                      f"evaluated, or its model file was deleted); use --source ticket, or a round with one: "
                      f"{_rounds_text(evaluated)}")


# ----- exporting ------------------------------------------------------------------------------------
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
    batch counters of norm layers torchvision froze), so that it loads strictly."""

    model: nn.Module
    output_layers: tuple[str, ...] = ()
    rename: Callable[[str], str | None] = _keep_name
    stem: str = "model"
    description: str = "the model's state_dict"
    extra_views: tuple[ExportView, ...] = ()
    complete: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _as_is

    def views(self) -> list[ExportView]:
        return [ExportView(self.rename, self.stem, self.description), *self.extra_views]


@dataclass
class ExportResult:
    """Files written by `export_run`, their sizes, the sparsity reports, and the model holding the weights."""

    out_dir: Path
    files: dict[str, Path]
    sizes: dict[str, int]
    round: int
    source: str
    architecture: dict[str, Any]
    model_report: dict[str, Any]
    exported_report: dict[str, Any]
    model: nn.Module = field(repr=False)
    exported: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def sparsity_markdown(self) -> str:
        return sparsity_markdown(self.model_report, self.exported_report)


def sparsity_markdown(model_report: Mapping[str, Any], exported_report: Mapping[str, Any]) -> str:
    """Both sparsity tables of an export: the whole model's prunable weights, then the exported tensors."""
    return "\n".join(["## Model (all prunable weights)", "", format_sparsity_table(dict(model_report)), "",
                      "## Exported weights", "", format_sparsity_table(dict(exported_report)), ""])


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


def export_run(run_dir: str | Path | RunDir, out_dir: str | Path,
               make_target: Callable[[Mapping[str, Any]], ExportTarget], *, round: int | None = None,
               source: str = "ticket", architecture: Mapping[str, Any] | None = None) -> ExportResult:
    """Export one round of a run (or its final ticket): dense and sparse weights, the ticket, sparsity tables.

    `source="ticket"`: the weights are m ⊙ θ0 (the ticket, for retraining); `"trained"`: the trained
    full-data model of that round's evaluation, with the mask re-applied so pruned weights are exactly 0.
    """
    if source not in SOURCES:
        raise ExportError(f"source must be one of {SOURCES}, got {source!r}")
    run = open_run(run_dir)
    run_dir = run.path
    if Path(out_dir).resolve() == run_dir.resolve():
        raise ExportError(f"--out {out_dir} is the run directory itself, whose ticket.pt the export would "
                          "replace; choose another folder, e.g. RUN_DIR/export")
    ticket = load_round_ticket(run, round, architecture)
    r = int(ticket.meta["round"])
    try:
        target = make_target(ticket.architecture)
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"{run_dir}: cannot build the model of architecture "
                          f"{ticket.architecture.get('name')!r}: {exc}") from None
    try:
        check_ticket_fits(ticket, target.model, target.output_layers, source=f"{run_dir} round {r}")
    except TicketError as exc:
        raise ExportError(f"mismatched architecture: {exc}") from None
    if source == "trained":
        weights_path = trained_weights_path(run, r)
        raw = load_checkpoint(weights_path)
        revived = sum(int(torch.count_nonzero(raw[n][~m])) for n, m in ticket.mask.items()
                      if n in raw and raw[n].shape == m.shape)
        if revived:
            # Training re-applies the mask after every step, so this means the file was altered.
            log.warning("%s: %d pruned weights are not zero in the trained model; they are exported as zero",
                        weights_path, revived)
    else:
        weights_path, raw = _start_weights(run, r), ticket.init
    weights = target.complete(masked_state_dict(raw, ticket.mask))
    try:
        target.model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"mismatched architecture: {weights_path} does not fit the model built from "
                          f"{ticket.architecture.get('name')!r}: {' '.join(first[:3])}") from None

    out_dir = Path(out_dir)
    meta = {"run_dir": str(run_dir), "round": r, "source": source, "architecture": ticket.architecture,
            "contents": target.description}
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
    exported_report = reports[0]
    files.update(ticket=out_dir / "ticket.pt", sparsity_md=out_dir / "sparsity.md",
                 sparsity_json=out_dir / "sparsity.json", manifest=out_dir / "export.json")
    save_ticket(Ticket(mask=ticket.mask, init=ticket.init, architecture=ticket.architecture,
                       sparsity=ticket.sparsity, meta={**ticket.meta, "exported_from": str(run_dir)}),
                files["ticket"])
    title = f"# Sparsity of {run_dir.name}, round {r} ({source})\n\n"
    atomic_write_text(title + sparsity_markdown(ticket.sparsity, exported_report), files["sparsity_md"])
    atomic_write_json({"round": r, "source": source, "model": ticket.sparsity, "exported": exported_report},
                      files["sparsity_json"])
    sizes = {k: p.stat().st_size for k, p in files.items() if k != "manifest"}
    atomic_write_json({**meta, "files": {k: p.name for k, p in files.items()}, "bytes": sizes,
                       "sparsity": ticket.sparsity.get("overall", {}).get("sparsity"),
                       "exported_sparsity": exported_report["overall"]["sparsity"]}, files["manifest"])
    return ExportResult(out_dir=out_dir, files=files, sizes=sizes, round=r, source=source,
                        architecture=dict(ticket.architecture), model_report=ticket.sparsity,
                        exported_report=exported_report, model=target.model, exported=dict(main_exported))


# ----- ONNX -----------------------------------------------------------------------------------------
def require_onnx() -> None:
    """torch.onnx needs the `onnx` package; say how to get it before a slow trace fails."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the onnx package, which is not installed: pip install onnx")


def export_onnx(model: nn.Module, example_args: tuple[Any, ...], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: Mapping[str, Any] | None = None, opset: int = 17) -> Path:
    """Trace `model` (in eval mode, on the CPU) to an ONNX file, written atomically."""
    require_onnx()
    model = model.eval().cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that handles torchvision's detectors.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_args, buffer, opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dict(dynamic_axes or {}),
                          dynamo=False)
    atomic_write_bytes(buffer.getvalue(), path)
    return Path(path)


def run_onnx(path: str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """The outputs of the ONNX file in onnxruntime, or None when onnxruntime is not installed (optional)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, dict(feeds))]


def compare_outputs(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> dict[str, Any]:
    """Element-wise comparison of ONNX outputs with PyTorch's (for models whose outputs have a fixed order)."""
    diffs = []
    for out, want in zip(got, expected):
        if np.shape(out) != np.shape(want):
            diffs.append(math.inf)
        elif np.size(want):
            diffs.append(float(np.max(np.abs(np.asarray(out, np.float64) - np.asarray(want, np.float64)))))
        else:
            diffs.append(0.0)
    return {"outputs": len(got), "max_abs_diff": max(diffs, default=0.0), "shapes": [list(np.shape(o)) for o in got]}


def verify_onnx(path: str | Path, feeds: Mapping[str, np.ndarray], expected: Sequence[np.ndarray], *,
                atol: float = 1e-3) -> dict[str, Any] | None:
    """Run the ONNX file and compare it with PyTorch element by element; None without onnxruntime.

    Raises ExportError when an output differs by more than `atol`.
    """
    got = run_onnx(path, feeds)
    if got is None:
        return None
    check = compare_outputs(got, expected)
    if not check["max_abs_diff"] <= atol:
        raise ExportError(f"{path}: onnxruntime's outputs differ from PyTorch's by up to {check['max_abs_diff']:.3g} "
                          f"(tolerance {atol:g}); the ONNX export is wrong, do not use it")
    return check


__all__ = [
    "SOURCES",
    "SPARSE_FORMAT",
    "ExportError",
    "ExportResult",
    "ExportTarget",
    "SparseFormatError",
    "compare_outputs",
    "encode_sparse",
    "evaluated_rounds",
    "export_onnx",
    "export_run",
    "load_round_ticket",
    "load_sparse",
    "load_sparse_mask",
    "masked_state_dict",
    "read_ticket_header",
    "require_onnx",
    "run_onnx",
    "save_sparse",
    "sparsity_markdown",
    "trained_weights_path",
    "verify_onnx",
]
