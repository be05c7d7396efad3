"""Channel tickets the engine finds: their slim exports compute what the masked models compute, from θ0 and from
the trained weights alike (the engine masks every reader of a removed channel but the output layer, which is
linear), and `colt train --ticket --control random_prune` draws random whole channels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from colt_cls.models import create_model
from colt_core.commands.export import export_command
from colt_core.export import load_slim
from colt_core.export.slim import relative_difference
from colt_core.prune.ticket import load_ticket

# Late rewinding: the start weights are round 0's after a few steps, so the removed channels' BN betas (the
# constants they still emit) are not zero; rewound to θ0 they stay zero through training.
PRUNE = {"granularity": "channel", "rates": {"conv": 0.3, "fc": 0.2}, "evaluate": "first_last",
         "rewind_iteration": 2}


@pytest.fixture(scope="module")
def channel_run(train_tool, run_config, small_cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-round channel COLT-2 run of an eighth-width Conv-3 (8/16/32 channels) rewinding late, its final
    ticket evaluated."""
    root = tmp_path_factory.mktemp("cls_channel_export")
    config = run_config(small_cifar10_root, root / "run", prune=PRUNE)
    (root / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(train_tool, ["--cfg", str(root / "cfg.yaml")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root / "run"


def kept_channels(mask: dict[str, torch.Tensor]) -> dict[str, int]:
    return {name: int(m.flatten(1).any(1).sum()) for name, m in mask.items() if m.dim() == 4}


@pytest.mark.parametrize("source", ["ticket", "trained"])
def test_the_slim_export_of_an_engine_channel_ticket_equals_the_masked_model(channel_run, tmp_path, source):
    out = tmp_path / source
    result = CliRunner().invoke(export_command, [str(channel_run), "--out", str(out), "--source", source])
    assert result.exit_code == 0, result.output
    mask = load_ticket(channel_run / "ticket.pt").mask
    kept = kept_channels(mask)
    assert all(0 < kept[n] < mask[n].shape[0] for n in kept), kept  # every conv lost channels, none lost all

    ticket = load_ticket(channel_run / "ticket.pt")
    weights = ticket.init if source == "ticket" else torch.load(
        channel_run / f"round_{ticket.meta['rounds']:02d}" / "eval" / "model.pt", weights_only=True)
    masked = create_model("conv3", 10, width=0.125)
    masked.load_state_dict({k: v * mask[k] if k in mask else v for k, v in weights.items()})
    masked.eval()
    if source == "trained":  # the removed channels emit constants (their BN betas): what the fold must carry
        dead = ~mask["features.8.weight"].flatten(1).any(1)
        assert masked.features[9].bias.detach()[dead].abs().max() > 0
    slim = load_slim(out / "slim.pt")
    assert [m.out_channels for m in slim.features if isinstance(m, torch.nn.Conv2d)] == list(kept.values())
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = slim(x), masked(x)
    assert relative_difference([got], [expected]) < 1e-5
    recorded = json.loads((out / "export.json").read_text())["slim"]["relative_difference"]
    assert recorded < 1e-5


def test_the_random_prune_control_of_a_channel_ticket_keeps_as_many_random_channels(
        channel_run, train_tool, run_config, small_cifar10_root, tmp_path):
    config = run_config(small_cifar10_root, tmp_path / "unused", prune=PRUNE)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "control"
    result = CliRunner().invoke(train_tool, ["--cfg", str(tmp_path / "cfg.yaml"), "--ticket",
                                             str(channel_run / "ticket.pt"), "--control", "random_prune",
                                             "--out", str(out)])
    assert result.exit_code == 0, result.output
    ticket = load_ticket(channel_run / "ticket.pt").mask
    control = torch.load(next(out.rglob("mask.pt")), weights_only=True)
    assert kept_channels(control) == kept_channels(ticket)
    assert any(not torch.equal(control[n].flatten(1).any(1), ticket[n].flatten(1).any(1)) for n in ticket
               if ticket[n].dim() == 4)  # other channels than the ticket's
    for name, m in control.items():
        if m.dim() == 4:  # whole filters, whole input columns: a row is all on or all off where its inputs live
            rows, cols = m.flatten(2).any(2).any(1), m.flatten(2).any(2).any(0)
            assert torch.equal(m.flatten(2).any(2), rows[:, None] & cols[None, :]), name
    previous = None
    for i in (0, 4, 8):  # each conv reads exactly the channels the one before keeps
        keep = control[f"features.{i}.weight"].flatten(1).any(1)
        if previous is not None:
            assert torch.equal(control[f"features.{i}.weight"].flatten(2).any(2).any(0), previous)
        previous = keep
