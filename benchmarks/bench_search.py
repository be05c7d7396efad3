"""What a ticket search costs and what its tickets are worth, on real images: LTH against COLT-2 and COLT-4.

scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1,797 8×8 scans; `pip install -e
".[bench]"`) are written once in CIFAR-10's on-disk layout (32×32 RGB, a fixed stratified split of 1,397
training and 400 test images) and go through the classifier front end as they are: Conv-3, Adam, no flips.
Every setting runs with several seeds to about 79% and about 90% sparsity (the paper's rates: COLT 15%/20%, LTH
20%/20%); the ticket of the first round that reaches each level is trained on the full data and evaluated beside
its `random_prune` control. One table: rounds, search time (the search trainings up to that round; ticket
evaluations and controls apart) and its ratio to plain LTH's, ticket accuracy, control accuracy, their gap, and
what the ticket costs to run: parameters and MACs (Torch-Pruning's `count_ops_and_params` on one 32×32 image).
A channel ticket (`*_channel*` settings, `prune.granularity: channel`) is counted by its slim shape, the network
with its removed channels cut out; an unstructured ticket by its surviving weights (each layer's MACs scaled by
the share of its weights that survive), which only sparse kernels would turn into speed.

    python benchmarks/bench_search.py          # 8 settings at 8 epochs, 3 at 32, 3 seeds each (the 32-epoch regime
                                               # alone: about 45 min on 2 cores)
    python benchmarks/bench_search.py --quick  # one seed, LTH and COLT-2, 2 epochs, 79%: a smoke test
    python benchmarks/bench_search.py --settings lth,colt2,colt2_eb --seeds 0,1,2 --epochs 8
    python benchmarks/bench_search.py --settings lth,colt2,lth_channel,colt2_channel,colt2_channel_gamma --epochs 8

Runs go to --out (default runs/bench_search), one folder per setting, seed and regime, each resumable:
rerunning the command continues where it stopped. Two runs train at a time, one CPU thread each.
"""

from __future__ import annotations

import math
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import yaml

from colt_core.prune.channels import build_channel_plan, prune_by_channel
from colt_core.prune.magnitude import magnitude_prune, resolve_prune_groups
from colt_core.rundir import RunDir, RunSummary, read_summary

LEVELS = (0.79, 0.90)
N_TEST = 400


@dataclass(frozen=True)
class Setting:
    """One search method: how many partitions, its rates, and the engine's options beyond the paper's."""

    name: str
    method: str
    partitions: int
    rates: tuple[float, float]  # conv, fc
    prune: dict[str, Any]

    @property
    def label(self) -> str:
        return self.name


EARLY_BIRD = {"early_bird": {"distance": 0.1, "window": 3, "check": "epoch"}}
# Two masks that each prune a share p of the weights alive differ on at most 2p of them: You et al.'s 0.1 was set
# for cuts of 30-70% (at most 10% of the largest distance); at COLT's 15% a round it is a third of it. 0.03 is
# You et al.'s tightness at this rate.
STRICT_EARLY_BIRD = {"early_bird": {"distance": 0.03, "window": 3, "check": "epoch"}}
CHANNEL = {"granularity": "channel", "channel_score": "l1"}
SETTINGS = {s.name: s for s in [
    Setting("lth", "lth", 1, (0.2, 0.2), {}),
    Setting("lth_eb", "lth", 1, (0.2, 0.2), EARLY_BIRD),
    Setting("colt2", "colt", 2, (0.15, 0.2), {}),
    Setting("colt2_eb", "colt", 2, (0.15, 0.2), EARLY_BIRD),
    Setting("colt4", "colt", 4, (0.15, 0.2), {}),
    Setting("colt4_eb", "colt", 4, (0.15, 0.2), EARLY_BIRD),
    Setting("colt2_steps", "colt", 2, (0.15, 0.2), {"partition_steps": "full_data"}),
    Setting("colt2_increase", "colt", 2, (0.15, 0.2), {"score": "magnitude_increase"}),
    Setting("colt2_increase_eb", "colt", 2, (0.15, 0.2), {"score": "magnitude_increase", **EARLY_BIRD}),
    Setting("colt2_increase_eb_strict", "colt", 2, (0.15, 0.2), {"score": "magnitude_increase", **STRICT_EARLY_BIRD}),
    Setting("colt4_increase_eb", "colt", 4, (0.15, 0.2), {"score": "magnitude_increase", **EARLY_BIRD}),
    # Channel tickets: whole filters, ranked by their L1 norm or by the |γ| of the BatchNorm after them.
    Setting("lth_channel", "lth", 1, (0.2, 0.2), CHANNEL),
    Setting("lth_channel_gamma", "lth", 1, (0.2, 0.2), {**CHANNEL, "channel_score": "bn_gamma"}),
    Setting("colt2_channel", "colt", 2, (0.15, 0.2), CHANNEL),
    Setting("colt2_channel_gamma", "colt", 2, (0.15, 0.2), {**CHANNEL, "channel_score": "bn_gamma"}),
    Setting("colt2_channel_increase_eb", "colt", 2, (0.15, 0.2),
            {**CHANNEL, "score": "magnitude_increase", **EARLY_BIRD}),
]}


# ----- the data --------------------------------------------------------------------------------------------
def write_digits(root: Path) -> Path:
    """scikit-learn's digits as a CIFAR-10 folder under `root` (written once; the split is fixed)."""
    folder = root / "cifar-10-batches-py"
    if (folder / "batches.meta").is_file():
        return root
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # N×1×8×8 in [0, 1]
    images = torch.nn.functional.interpolate(images, size=32, mode="bilinear", align_corners=False)
    rows = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).reshape(len(images), -1).numpy()
    train, test = train_test_split(np.arange(len(rows)), test_size=N_TEST, stratify=digits.target, random_state=0)
    folder.mkdir(parents=True, exist_ok=True)
    for number, part in enumerate(np.array_split(train, 5), start=1):
        _pickle(folder / f"data_batch_{number}", {"batch_label": f"training batch {number} of 5",
                                                  "labels": digits.target[part].tolist(), "data": rows[part],
                                                  "filenames": [f"digit_{i:04d}.png" for i in part]})
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": digits.target[test].tolist(),
                                    "data": rows[test], "filenames": [f"digit_{i:04d}.png" for i in test]})
    _pickle(folder / "batches.meta", {"num_cases_per_batch": len(train) // 5, "num_vis": 3072,
                                      "label_names": [str(d) for d in range(10)]})
    return root


def _pickle(path: Path, content: dict[str, Any]) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


# ----- one run -----------------------------------------------------------------------------------------------
def run_config(setting: Setting, seed: int, epochs: int, data: Path, width: float, target: float) -> dict[str, Any]:
    conv, fc = setting.rates
    return {
        "task": "classification", "seed": seed,
        "data": {"name": "cifar10", "root": str(data), "val_fraction": 0.1, "num_workers": 0, "hflip": False},
        "model": {"name": "conv3", "width": width, "init": "xavier"},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
                  "schedule": {"name": "cosine", "eta_min": 1e-5, "warmup_epochs": 0, "interval": "iteration"},
                  "cpu_threads": 1, "progress": False},
        "eval": {"batch_size": 500},
        "prune": {"method": setting.method, "partitions": setting.partitions, "rates": {"conv": conv, "fc": fc},
                  "target_sparsity": target, "max_rounds": 20, "evaluate": "first_last",
                  "evaluate_levels": [level for level in LEVELS if level <= target], "controls": ["random_prune"],
                  **setting.prune},
    }


def run_one(config: dict[str, Any], out: Path) -> float:
    """`colt train` of one config into `out` in a process of its own (resumed when it exists); its wall time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    resume = ["--resume"] if (out / "config.yaml").is_file() else []
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "colt_core.commands", "train", "--cfg", str(cfg), "--out", str(out),
                           *resume], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    if done.returncode != 0:
        raise click.ClickException(f"{out}: colt train failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


# ----- reading the runs --------------------------------------------------------------------------------------
def level_row(summary: RunSummary, level: float, run: RunDir | None = None) -> dict[str, Any] | None:
    """The first evaluated round reaching `level`: its round, sparsity, search time (with and without the
    early-bird stops, as the run records define it), ticket and control accuracy, and with `run` (the run's
    directory) the ticket's parameters and MACs."""
    for record in summary.rounds:
        if record.sparsity >= level and record.evaluation is not None:
            control = record.controls.get("random_prune")
            params, macs = ticket_cost(run, record.round) if run is not None else (None, None)
            return {"round": record.round, "sparsity": record.sparsity,
                    "search_s": summary.search_time_before(record.round),
                    "search_full_s": summary.search_time_before(record.round, without_stop=True),
                    "ticket": record.evaluation.value, "control": control.value if control else None,
                    "params": params, "macs": macs}
    return None


EXAMPLE = (1, 3, 32, 32)  # the input the MACs are counted on: one digit


def ticket_cost(run: RunDir, r: int) -> tuple[float, float]:
    """Parameters and MACs of round `r`'s ticket of `run`: a channel ticket's slim network (its removed channels
    cut out), or an unstructured ticket's surviving weights (each layer's MACs scaled by its surviving share)."""
    import torch_pruning as tp

    from colt_cls.models import create_model_from_description

    ticket = torch.load(run.ticket, weights_only=True)
    model = create_model_from_description(dict(ticket["architecture"]), num_classes=10).eval()
    mask = torch.load(run.round(r).mask, weights_only=True)
    example = torch.zeros(EXAMPLE)
    if ticket["meta"].get("granularity") == "channel":
        cut_channels(model, mask, example)
        macs, params = tp.utils.count_ops_and_params(model, example)
        return float(params), float(macs)
    macs, params, layer_macs, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    modules = dict(model.named_modules())
    for name, m in mask.items():
        dead = int((~m).sum())
        macs -= (layer_macs.get(modules[name.removesuffix(".weight")]) or 0.0) * dead / m.numel()
        params -= dead
    return float(params), float(macs)


def cut_channels(model: torch.nn.Module, mask: dict[str, torch.Tensor], example: torch.Tensor) -> None:
    """Cut the output channels `mask` removes (whole rows off) out of `model`, with their coupled layers' inputs."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    cuts = []
    for group in graph.get_all_groups(root_module_types=(torch.nn.Conv2d,)):
        root = group[0].dep
        weight = f"{names[root.target.module]}.weight"
        if weight in mask:
            dropped = (~mask[weight].flatten(1).any(1)).nonzero().flatten().tolist()
            if dropped:
                cuts.append((root.target.module, root.handler, dropped))
    for module, handler, dropped in cuts:  # each module's outputs belong to one group: indices stay valid
        graph.get_pruning_group(module, handler, dropped).prune()


def epochs_run(summary: RunSummary) -> tuple[float, float]:
    """Epochs the search trainings ran and were set to run, summed over every partition of every round."""
    pairs = [record.search_epochs() for record in summary.rounds]
    return sum(a for a, _ in pairs), sum(b for _, b in pairs)


def check_cost(summaries: Sequence[RunSummary]) -> tuple[float, float]:
    """Seconds the early-bird checks took, and the wall time of the trainings they ran in."""
    checks = total = 0.0
    for summary in summaries:
        for record in summary.rounds:
            for p in record.partitions or []:
                bird = p.training.early_bird
                if bird and "check_time_s" in bird:
                    checks, total = checks + bird["check_time_s"], total + p.wall_time_s
    return checks, total


def spread(values: Sequence[float | None], scale: float = 1.0, digits: int = 1) -> str:
    got = [v * scale for v in values if v is not None]
    if not got:
        return "–"
    if len(got) == 1:
        return f"{got[0]:.{digits}f}"
    return f"{statistics.mean(got):.{digits}f} ± {statistics.stdev(got):.{digits}f}"


def table(results: dict[str, list[RunSummary]], level: float, reference: str,
          runs: dict[str, list[RunDir]] | None = None) -> str:
    """The Markdown table of one sparsity level; search time ratios against the `reference` setting's mean;
    parameters and MACs of the tickets when their `runs` are given."""
    runs = runs or {}
    rows = {name: [level_row(s, level, run) for s, run in zip(summaries, runs.get(name) or [None] * len(summaries),
                                                               strict=True)]
            for name, summaries in results.items()}
    ref = [r["search_s"] for r in rows.get(reference, []) if r]
    ref_mean = statistics.mean(ref) if ref else math.nan
    lines = [f"### ≥ {100 * level:.0f}% sparsity", "",
             f"| setting | seeds | rounds | sparsity (%) | search time (s) | ratio to {reference} | "
             "without the stop (s) | epochs run / set | ticket (%) | random_prune (%) | ticket − control | params | "
             "MACs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, got in rows.items():
        found = [r for r in got if r]
        if not found:
            lines.append(f"| {name} | 0 | not reached | | | | | | | | | | |")
            continue
        gaps = [r["ticket"] - r["control"] for r in found if r["ticket"] is not None and r["control"] is not None]
        ran = [epochs_run(s) for s in results[name]]
        ratio = statistics.mean(r["search_s"] for r in found) / ref_mean
        lines.append(f"| {name} | {len(found)} | {spread([r['round'] for r in found], digits=1)} | "
                     f"{spread([r['sparsity'] for r in found], 100)} | "
                     f"{spread([r['search_s'] for r in found], digits=0)} | "
                     f"{ratio:.2f} | {spread([r['search_full_s'] for r in found], digits=0)} | "
                     f"{sum(a for a, _ in ran):.0f} / {sum(b for _, b in ran):.0f} | "
                     f"{spread([r['ticket'] for r in found], 100)} | {spread([r['control'] for r in found], 100)} | "
                     f"{spread(gaps, 100)} | {spread([r['params'] for r in found], 1e-3)}k | "
                     f"{spread([r['macs'] for r in found], 1e-6, 2)}M |")
    return "\n".join(lines)


# ----- what a partition learns (the diagnosis) ----------------------------------------------------------------
def diagnosis(run: RunDir) -> dict[str, Any]:
    """Round 0 of a run: how far each training moved its conv weights from θ0 (relative L2, per layer), how
    closely their magnitude ranks follow θ0's (Spearman), and how much the partitions' own masks (by the run's
    prune.score) overlap."""
    from colt_cls.models import create_model_from_description

    init = torch.load(run.init, weights_only=True)
    ticket = torch.load(run.ticket, weights_only=True)
    model = create_model_from_description(dict(ticket["architecture"]), num_classes=10)
    groups = resolve_prune_groups(model, {"conv": {"types": ["Conv2d"]}, "fc": {"types": ["Linear"]}},
                                  {"conv": 0.15, "fc": 0.2}, [ticket["architecture"].get("head", "head")])
    names = [n for g in groups if g.name == "conv" for n in g.params]
    parts = sorted(run.round(0).path.glob("partition_*"))
    prune = yaml.safe_load(run.config.read_text()).get("prune") or {}
    increase = prune.get("score") == "magnitude_increase"
    plan = None
    if prune.get("granularity") == "channel":  # the partitions' own channel masks, as the run prunes them
        plan = build_channel_plan(model, groups, [ticket["architecture"].get("head", "head")], torch.zeros(EXAMPLE))
    moved, ranks, masks = [], [], []
    for part in parts:
        state = torch.load(part / "model.pt", weights_only=True)
        moved.append([float((state[n] - init[n]).norm() / init[n].norm()) for n in names])
        ranks.append([_spearman(state[n].abs().flatten(), init[n].abs().flatten()) for n in names])
        ones = {n: torch.ones_like(init[n], dtype=torch.bool) for g in groups for n in g.params}
        reference = init if increase else None
        masks.append(magnitude_prune(state, ones, groups, reference=reference) if plan is None else
                     prune_by_channel(state, ones, groups, plan, channel_score=prune.get("channel_score", "l1"),
                                      reference=reference))
    overlap = None
    if len(masks) >= 2:
        pruned = [torch.cat([~m[n].flatten() for n in names]) for m in masks]
        union = torch.stack(pruned).any(0).float().mean().item()
        overlap = {"pruned_by_any": union, "independent": 1 - (1 - pruned[0].float().mean().item()) ** len(masks)}
    return {"layers": names, "relative_l2": np.mean(moved, axis=0).tolist(),
            "spearman": np.mean(ranks, axis=0).tolist(), "conv_overlap": overlap}


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def diagnosis_table(results: dict[str, list[RunDir]]) -> str:
    lines = ["| setting | conv layers: rel. L2 distance from θ0 | Spearman of |w| with |θ0| | conv pruned by any "
             "partition (independent masks) |", "|---|---|---|---|"]
    for name, runs in results.items():
        d = [diagnosis(r) for r in runs if r.ticket.is_file()]
        if not d:
            continue
        l2 = " / ".join(f"{v:.2f}" for v in np.mean([x["relative_l2"] for x in d], axis=0))
        sp = " / ".join(f"{v:.2f}" for v in np.mean([x["spearman"] for x in d], axis=0))
        ov = [x["conv_overlap"] for x in d if x["conv_overlap"]]
        ov_text = (f"{100 * statistics.mean(o['pruned_by_any'] for o in ov):.1f}% "
                   f"({100 * statistics.mean(o['independent'] for o in ov):.1f}%)") if ov else "–"
        lines.append(f"| {name} | {l2} | {sp} | {ov_text} |")
    return "\n".join(lines)


def allocation_table(results: dict[str, list[RunDir]], level: float) -> str:
    """Per setting, the share of each pruned layer's weights its ticket at `level` keeps (mean over the seeds):
    a `random_prune` control keeps these shares, so they set how strong the control is."""
    rows = {}
    for name, runs in results.items():
        shares = []
        for run in runs:
            row = level_row(read_summary(run), level) if run.ticket.is_file() else None
            if row is not None:
                mask = torch.load(run.round(row["round"]).mask, weights_only=True)
                shares.append({layer.removesuffix(".weight"): float(m.float().mean()) for layer, m in mask.items()})
        if shares:
            rows[name] = {layer: statistics.mean(s[layer] for s in shares) for layer in shares[0]}
    if not rows:
        return ""
    layers = list(next(iter(rows.values())))
    lines = [f"| setting (≥ {100 * level:.0f}%) | " + " | ".join(layers) + " |", "|---|" + "---:|" * len(layers)]
    lines += [f"| {name} | " + " | ".join(f"{100 * shares[layer]:.1f}%" for layer in layers) + " |"
              for name, shares in rows.items()]
    return "\n".join(lines)


# ----- the command --------------------------------------------------------------------------------------------
MAIN = "lth,lth_eb,colt2,colt2_eb,colt2_increase,colt2_increase_eb,colt4,colt4_increase_eb"
LONG = "lth,colt2_increase_eb,colt2_increase_eb_strict"


def lth_reference(settings: Collection[str]) -> str:
    """The LTH setting others are compared with: plain `lth` when it ran, else the first LTH variant."""
    if "lth" in settings:
        return "lth"
    return next((name for name in settings if SETTINGS[name].method == "lth"), "lth")


def dense_line(summaries: dict[str, list[RunSummary]], runs: dict[str, list[RunDir]] | None = None) -> str:
    """The dense model's accuracy over the seeds: LTH's round 0 (COLT's runs of one seed share one dense model),
    and its parameters and MACs."""
    lth = lth_reference(summaries)
    dense = [s.rounds[0].evaluation.value for s in summaries.get(lth, []) if s.rounds and s.rounds[0].evaluation]
    line = f"Dense model ({lth}'s round 0, one per seed): {spread(dense, 100, 2)}%"
    finished = [r for rs in (runs or {}).values() for r in rs if r.ticket.is_file()]
    if finished:
        params, macs = ticket_cost(finished[0], 0)
        line += f"; {params / 1e3:.1f}k parameters, {macs / 1e6:.2f}M MACs"
    return line + "."


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="runs/bench_search", show_default=True, type=click.Path(file_okay=False))
@click.option("--settings", "names", default=MAIN, show_default=True,
              help=f"comma-separated settings of the first regime, from: {', '.join(SETTINGS)}")
@click.option("--long-settings", "long_names", default=LONG, show_default=True,
              help="the settings of the later (longer) regimes")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--epochs", "epoch_list", default="8,32", show_default=True,
              help="epochs per training, one regime each (comma-separated); 32 is the paper's regime here: the "
                   "dense model scores at 32 what it scores at 64")
@click.option("--width", default=0.5, show_default=True, help="Conv-3 channel multiplier")
@click.option("--target", default=0.90, show_default=True, help="the sparsity every run prunes to")
@click.option("--jobs", default=2, show_default=True, help="runs trained at a time (one CPU thread each)")
@click.option("--quick", is_flag=True, help="one seed, LTH and COLT-2, 2 epochs, to 79%: a smoke test")
def main(out: str, names: str, long_names: str, seeds: str, epoch_list: str, width: float, target: float,
         jobs: int, quick: bool) -> None:
    """Run the search benchmark on scikit-learn's digits and print its tables."""
    if quick:
        names, seeds, epoch_list, width, target = "lth,colt2", "0", "2", 0.25, 0.79
    epochs = [int(e) for e in epoch_list.split(",")]
    regimes = {e: (names if i == 0 else long_names).split(",") for i, e in enumerate(epochs)}
    unknown = sorted({n for settings in regimes.values() for n in settings if n not in SETTINGS})
    if unknown:
        raise click.BadParameter(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    root, seed_list = Path(out), [int(s) for s in seeds.split(",")]
    data = write_digits(root / "data")
    grid = [(SETTINGS[n], s, e) for e, settings in regimes.items() for n in settings for s in seed_list]
    start = time.perf_counter()

    def work(item: tuple[Setting, int, int]) -> float:
        setting, seed, e = item
        out_dir = root / f"e{e}" / setting.name / f"seed_{seed}"
        return run_one(run_config(setting, seed, e, data, width, target), out_dir)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(work, grid))
    report = [f"# Search benchmark: digits, Conv-3 ×{width}, seeds {seeds}, {time.perf_counter() - start:.0f} s", ""]
    for e, settings in regimes.items():
        runs = {n: [RunDir(root / f"e{e}" / n / f"seed_{s}") for s in seed_list] for n in settings}
        summaries = {n: [read_summary(r) for r in rs] for n, rs in runs.items()}
        report += [f"## {e} epochs a training", "", dense_line(summaries, runs), ""]
        for level in (lv for lv in LEVELS if lv <= target):
            report += [table(summaries, level, reference=lth_reference(settings), runs=runs), ""]
        checks, total = check_cost([s for got in summaries.values() for s in got])
        if total:
            report += [f"Early-bird checks took {checks:.1f} s of the {total:.0f} s their trainings ran "
                       f"({100 * checks / total:.2f}%).", ""]
        report += ["What round 0's search trainings learn:", "", diagnosis_table(runs), ""]
        for level in (lv for lv in LEVELS if lv <= target):
            allocation = allocation_table(runs, level)
            if allocation:
                report += ["Weights each ticket keeps per pruned layer (its control keeps the same shares):", "",
                           allocation, ""]
    text = "\n".join(report)
    (root / "bench_search.md").write_text(text)
    click.echo(text)


if __name__ == "__main__":
    main()
