"""The deployment benchmark's smoke test: `bench_deploy.py --quick` measures every model and variant and writes
its table, CSV and JSON."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colt_core.io import read_json

REPO = Path(__file__).resolve().parents[2]


def test_quick_measures_dense_unstructured_and_slim_models_and_writes_the_table(tmp_path):
    pytest.importorskip("onnxruntime")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_deploy.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_json(tmp_path / "bench_deploy.json")["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        (m, v) for m in ("vgg16_backbone", "detector", "resnet18") for v in ("dense", "unstructured", "channel (slim)")]
    for dense, unstructured, slim in (rows[i:i + 3] for i in range(0, 9, 3)):
        # Half the channels: about a quarter of the conv weights and MACs; the unstructured ticket matches the
        # slim parameter count in dense shapes, so it keeps the dense MACs (the detector's box head runs on as
        # many proposals as survive, which its weights decide).
        assert slim["parameters"] < 0.5 * dense["parameters"] and slim["macs"] < 0.5 * dense["macs"]
        if dense["model"] != "detector":
            assert unstructured["macs"] == dense["macs"]
        assert abs(unstructured["parameters"] - slim["parameters"]) < 0.25 * slim["parameters"]
        assert all(r["torch_cpu_1t_ms"] > 0 and r["onnx_cpu_1t_ms"] > 0 for r in (dense, unstructured, slim))
        assert dense["torch_cpu_1t_speedup"] == 1.0
    table = done.stdout.split("\n\n", 2)[2]
    assert table.startswith("| model | variant | parameters | GMACs | torch_cpu_1t ms (×) | onnx_cpu_1t ms (×) |")
    assert "| resnet18 | channel (slim) |" in table
    assert (tmp_path / "bench_deploy.csv").read_text().startswith("model,variant,parameters,macs,")
    assert (tmp_path / "bench_deploy.md").read_text().startswith("# Deployment benchmark (--quick)")
