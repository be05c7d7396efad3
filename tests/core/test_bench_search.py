"""The search benchmark's smoke test: `bench_search.py --quick` on scikit-learn's digits, through `colt train`."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("sklearn", reason="the benchmark's data ships with scikit-learn (pip install -e '.[bench]')")


def test_quick_runs_lth_and_colt2_to_79_percent_and_prints_the_table(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_search.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("### ≥ 79% sparsity", 1)[1].split("\n\n", 2)[1]  # the first table after its title
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| lth |") or line.startswith("| colt2 |")}
    assert set(rows) == {"lth", "colt2"}
    for cells in rows.values():  # seeds, rounds, sparsity, search, ratio, without the stop, epochs, ticket, control
        assert cells[0] == "1" and float(cells[2]) >= 79.0 and 0 < float(cells[7]) <= 100 and 0 < float(cells[8])
    assert rows["lth"][4] == "1.00"
    batch = tmp_path / "data" / "cifar-10-batches-py" / "test_batch"
    with open(batch, "rb") as handle:
        test = pickle.load(handle)
    assert len(test["labels"]) == 400 and test["data"].shape == (400, 3072)
    for setting in ("lth", "colt2"):
        assert (tmp_path / "e2" / setting / "seed_0" / "ticket.pt").is_file()
    assert (tmp_path / "bench_search.md").read_text().startswith("# Search benchmark")
