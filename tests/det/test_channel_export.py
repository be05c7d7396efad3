"""A detector's channel ticket found by the engine (late rewinding, so removed channels emit nonzero constants)
exports a slim model whose traced outputs equal the masked model's, from θ0 and from the trained weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from colt_core.commands.export import export_command

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_colt_det  # noqa: E402
from test_channels import TINY_CHANNEL_RUN  # noqa: E402


def test_slim_exports_of_an_engine_channel_detector_ticket_equal_the_masked_model(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["--cfg", "voc_synth_tiny.yaml", "--set", f"data.root={tmp_path / 'voc'}",
                "--set", "prune.rewind_iteration=2"]
        for item in TINY_CHANNEL_RUN:
            args += ["--set", item]
        run = CliRunner().invoke(train_colt_det.main, [*args, "--out", str(tmp_path / "run")])
        assert run.exit_code == 0, run.output
        for source in ("ticket", "trained"):
            out = tmp_path / source
            result = CliRunner().invoke(export_command, [str(tmp_path / "run"), "--out", str(out), "--source", source])
            assert result.exit_code == 0, result.output
            slim = json.loads((out / "export.json").read_text())["slim"]
            assert slim["parameters_slim"] < slim["parameters_full"] / 2
            # the RPN head's outputs on the backbone features, and the box head's on two fixed boxes
            assert slim["relative_difference"] < 1e-5, source
    finally:
        torch.set_num_threads(threads)
