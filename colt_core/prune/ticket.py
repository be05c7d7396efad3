"""Ticket files: the mask, θ0, the architecture description and the sparsity, validated on load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colt_core.errors import UserError
from colt_core.io import atomic_save, load_checkpoint

TICKET_FORMAT = 1


class TicketError(UserError, ValueError):
    """A ticket file is malformed or does not fit the model it is loaded into."""


@dataclass
class Ticket:
    """A winning ticket: which weights survive (mask) and where they start (init, θ0)."""

    mask: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    architecture: dict[str, Any]
    sparsity: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": TICKET_FORMAT, "mask": self.mask, "init": self.init,
                "architecture": self.architecture, "sparsity": self.sparsity, "meta": self.meta}


def read_ticket_header(path: str | Path) -> dict[str, Any]:
    """Architecture, sparsity and meta of a ticket file, without reading θ0 into memory."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise TicketError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many unrelated types for a damaged file
        raise TicketError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the ticket file is "
                          "damaged, resume the run to rewrite it") from None
    if not isinstance(data, Mapping) or data.get("format") != TICKET_FORMAT or "architecture" not in data:
        raise TicketError(f"{path}: not a COLT ticket file")
    return {"architecture": dict(data["architecture"]), "sparsity": dict(data.get("sparsity", {})),
            "meta": dict(data.get("meta", {}))}


def save_ticket(ticket: Ticket, path: str | Path) -> None:
    """Write a ticket atomically; it loads with `torch.load(..., weights_only=True)`."""
    validate_ticket(ticket, source=str(path))
    atomic_save(ticket.to_dict(), path)


def validate_ticket(ticket: Ticket, source: str = "ticket") -> None:
    """Mask entries must be bool tensors naming θ0 entries of the same shape."""
    for name, m in ticket.mask.items():
        if not torch.is_tensor(m) or m.dtype != torch.bool:
            raise TicketError(f"{source}: mask entry {name!r} is not a bool tensor")
        if name not in ticket.init:
            raise TicketError(f"{source}: mask names {name!r}, which θ0 does not contain")
        if tuple(ticket.init[name].shape) != tuple(m.shape):
            raise TicketError(f"{source}: {name!r} has mask shape {tuple(m.shape)} but θ0 shape "
                              f"{tuple(ticket.init[name].shape)}")


TICKET_FIX = "pass a ticket.pt written by tools/train_colt_det.py, train_colt_cls.py or export_backbone.py"


def load_ticket(path: str | Path, model: nn.Module | None = None,
                output_layers: tuple[str, ...] | list[str] = (), *, fix: str = TICKET_FIX) -> Ticket:
    """Read and validate a ticket; with `model`, check every name and shape against it.

    Output layers may differ in size (a head for another label set); everything else must match. `fix` is
    the advice when the file is not a readable ticket (the default suits a ticket the user brought).
    """
    data = load_checkpoint(path, fix=fix)
    if not isinstance(data, Mapping) or data.get("format") != TICKET_FORMAT:
        raise TicketError(f"{path}: not a COLT ticket file (expected keys format/mask/init/architecture); {fix}")
    missing = [k for k in ("mask", "init", "architecture") if k not in data]
    if missing:
        raise TicketError(f"{path}: ticket lacks {missing}")
    ticket = Ticket(mask=dict(data["mask"]), init=dict(data["init"]), architecture=dict(data["architecture"]),
                    sparsity=dict(data.get("sparsity", {})), meta=dict(data.get("meta", {})))
    validate_ticket(ticket, source=str(path))
    if model is not None:
        check_ticket_fits(ticket, model, output_layers, source=str(path))
    return ticket


def check_ticket_fits(ticket: Ticket, model: nn.Module, output_layers=(), source: str = "ticket") -> None:
    """Raise TicketError naming the first parameter whose name or shape differs from `model`."""
    state = model.state_dict()
    for name, m in ticket.mask.items():
        if name not in state:
            raise TicketError(f"{source}: the ticket prunes {name!r}, which this model does not have; "
                              f"the ticket was found for architecture {ticket.architecture}")
        if tuple(state[name].shape) != tuple(m.shape):
            raise TicketError(f"{source}: {name!r} has shape {tuple(m.shape)} in the ticket but "
                              f"{tuple(state[name].shape)} in this model; architectures differ "
                              f"(ticket: {ticket.architecture})")
    for key, value in state.items():
        # Output layers may differ; a norm layer's batch counter is no weight (a frozen norm layer has none).
        if any(key.startswith(o + ".") for o in output_layers) or key.endswith("num_batches_tracked"):
            continue
        if key not in ticket.init:
            raise TicketError(f"{source}: θ0 has no entry {key!r}; the model's architecture differs "
                              f"from the ticket's ({ticket.architecture})")
        if tuple(ticket.init[key].shape) != tuple(value.shape):
            raise TicketError(f"{source}: {key!r} has shape {tuple(ticket.init[key].shape)} in θ0 but "
                              f"{tuple(value.shape)} in this model")
