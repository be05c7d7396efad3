"""The kept-channels table of a channel run's report (`prune.granularity: channel`): how many output channels
each layer keeps in the run's latest mask, which is what its slim export will have."""

from __future__ import annotations

from colt_core.config import read_yaml
from colt_core.io import load_checkpoint
from colt_core.prune.channels import kept_channels
from colt_core.rundir import RunDir, RunSummary


def channel_section(run: RunDir, summary: RunSummary) -> list[str]:
    """report.md's "Kept channels" section: layer, kept / all output channels, for a channel run (none otherwise)."""
    prune = (read_yaml(run.config).get("prune") or {}) if run.config.is_file() else {}
    if prune.get("granularity") != "channel" or not summary.rounds:
        return []
    r = summary.rounds[-1].round
    path = run.round(r).mask
    if not path.is_file():
        return []
    mask = load_checkpoint(path)
    rank = 2 if prune.get("fc_granularity") == "neuron" else 3  # linear layers' rows are neurons with `neuron`
    counts = kept_channels(mask, [n for n, m in mask.items() if m.dim() >= rank])
    lines = [f"## Kept channels (round {r})", "",
             "Output channels each layer keeps in the latest mask, as its slim export has them; coupled layers "
             "(a residual sum, a depthwise convolution and its input) keep the same ones.", "",
             "| layer | kept | of | kept (%) |", "|---|---:|---:|---:|"]
    lines += [f"| {layer} | {kept} | {total} | {100 * kept / total:.1f} |" for layer, (kept, total) in counts.items()]
    kept, total = sum(k for k, _ in counts.values()), sum(t for _, t in counts.values())
    lines += [f"| all | {kept} | {total} | {100 * kept / max(total, 1):.1f} |", ""]
    return lines
