"""Wall time of one COLT-2 round of the tiny detection config with 1 process and with K torchrun ranks.

    python benchmarks/bench_distributed.py [--ranks 2] [--cores 2] [--epochs 1] [--n-trainval 300]

Runs tools/train_colt_det.py on configs/voc_synth_tiny.yaml (synthetic VOC, generated once before timing)
for exactly one train-prune round (prune.max_rounds=1, no ticket evaluation): as one process with `--cores`
threads, as one process with cores/K threads, and under `torchrun --standalone --nproc_per_node=K` with
cores/K threads per rank, so the first and last use the same cores (on a GPU machine each rank takes one
GPU). It reports the round's wall time (from the round-0 mask to the round-1 mask, both written by rank 0,
so start-up is left out), the whole command's wall time and the ratios, the machine's load (`uptime`, as a
shared machine makes timings noisy), and whether each run found the torchrun run's mask (each partition is
trained with the same seeds; only thread counts differ). OpenMP threads wait passively by default, since
spinning threads on a CPU shared with other work make multi-threaded runs many times slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colt_core.config import load_config  # noqa: E402
from colt_det.config import DetRunConfig  # noqa: E402
from colt_det.synthetic import ensure_synthetic_voc  # noqa: E402

TOOL = ROOT / "tools" / "train_colt_det.py"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load averages " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def _run(ranks: int, threads: int, overrides: list[str], out: Path, wait_policy: str) -> dict[str, float]:
    launcher = [] if ranks == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [sys.executable, *launcher, str(TOOL), "--cfg", "voc_synth_tiny.yaml", "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    round_time = (out / "round_01" / "mask.pt").stat().st_mtime - (out / "round_00" / "mask.pt").stat().st_mtime
    return {"round_s": round_time, "command_s": total}


@click.command()
@click.option("--ranks", default=2, show_default=True, help="torchrun processes of the parallel run")
@click.option("--cores", default=2, show_default=True, help="CPU threads in all, shared by the ranks")
@click.option("--epochs", default=1, show_default=True, help="epochs per partition training")
@click.option("--n-trainval", default=300, show_default=True, help="synthetic training images")
@click.option("--omp-wait-policy", type=click.Choice(["passive", "active", "default"]), default="passive",
              show_default=True,
              help="OpenMP threads waiting for work sleep (passive) or spin (active); on a CPU shared with other "
                   "work spinning threads lose their time slices and multi-threaded runs slow down many times")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the figures here")
def main(ranks: int, cores: int, epochs: int, n_trainval: int, omp_wait_policy: str, json_path: str | None) -> None:
    """Time one COLT-2 detection round alone and over `ranks` torchrun processes."""
    per_rank = max(1, cores // ranks)
    # (label, processes, threads per process); the middle one separates the gain of running partitions
    # side by side from the cost of intra-op threading on a (shared) CPU.
    setups = [(f"1 process x {cores} threads", 1, cores)]
    if per_rank != cores:
        setups.append((f"1 process x {per_rank} thread(s)", 1, per_rank))
    setups.append((f"{ranks} ranks x {per_rank} thread(s)", ranks, per_rank))
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        tmp_path = Path(tmp)
        overrides = [f"data.root={tmp_path / 'voc'}", f"data.synthetic.n_trainval={n_trainval}",
                     f"train.epochs={epochs}", "train.progress=false", "prune.max_rounds=1",
                     "prune.evaluate=none"]
        cfg = load_config(DetRunConfig, "voc_synth_tiny.yaml", overrides, configs_dir=ROOT / "configs")
        ensure_synthetic_voc(cfg.data.root, **asdict(cfg.data.synthetic))  # generated before any timing
        before = _uptime()
        results = {label: _run(n, threads, overrides, tmp_path / f"run{i}", omp_wait_policy)
                   for i, (label, n, threads) in enumerate(setups)}
        after = _uptime()
        masks = [torch.load(tmp_path / f"run{i}" / "round_01" / "mask.pt", weights_only=True)
                 for i in range(len(setups))]
        # Whether each run's mask equals the torchrun run's (thread counts change float sums in the last bits).
        same = {label: all(torch.equal(m[k], masks[-1][k]) for k in m) for (label, _, _), m in zip(setups, masks)}
    device = "cuda" if torch.cuda.is_available() else f"cpu, {cores} cores"
    spread = results[setups[-1][0]]
    figures = {
        "config": "voc_synth_tiny.yaml", "overrides": overrides[1:], "device": device, "ranks": ranks,
        "runs": results,
        "round_speedup": {label: r["round_s"] / spread["round_s"] for label, r in results.items()},
        "omp_wait_policy": omp_wait_policy, "same_mask_as_torchrun": same,
        "uptime_before": before, "uptime_after": after,
    }
    click.echo(f"one COLT-2 round of voc_synth_tiny ({n_trainval} images, {epochs} epoch(s)) on {device}")
    click.echo(f"OMP_WAIT_POLICY: {omp_wait_policy}")
    click.echo(f"{'':>26} {'round (s)':>10} {'command (s)':>12} {'round ratio':>12} {'same mask':>10}")
    for label, r in results.items():
        ratio = r["round_s"] / spread["round_s"]
        click.echo(f"{label:>26} {r['round_s']:>10.1f} {r['command_s']:>12.1f} {ratio:>11.2f}x {same[label]!s:>10}")
    click.echo(f"uptime before: {before}\nuptime after:  {after}")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
