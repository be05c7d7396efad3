"""What a ticket buys at deployment: inference latency, parameters and MACs of a dense model, an unstructured
ticket and a channel ticket (slim), in PyTorch and ONNX Runtime, on the CPU at 1 and 2 threads and on a GPU
when CUDA is present.

Models: the VGG16 Faster R-CNN backbone (`colt_det.model`, full width, one 600×600 image), the whole detector at
600×600 in eval mode, and torchvision's ResNet-18 at 224×224. The channel ticket keeps the top half (by summed
filter L1 norm) of the channels of every coupled group of prunable convolutions (Torch-Pruning's dependency
graph groups them); its model is cut by `colt_core.export.slim_model`. The unstructured ticket keeps, per layer,
the largest-magnitude weights at the slim layer's weight count (about the same parameter count), in dense
shapes. Parameters of the unstructured ticket count its nonzero weights; MACs are Torch-Pruning's
`tp.utils.count_ops_and_params` of the shapes that run (dense shapes for the unstructured ticket). Weights are
the models' initialisation (biases zero), so the slim model computes what the masked one does.

    python benchmarks/bench_deploy.py                      # full size, repeats 20, threads 1,2 (on an idle machine)
    python benchmarks/bench_deploy.py --quick              # tiny sizes, a smoke test in seconds
    python benchmarks/bench_deploy.py --repeats 50 --threads 1,2,4 --out runs/bench_deploy

Latency is the median of --repeats timed runs after warm-up runs. The table is printed in Markdown and written
to --out as bench_deploy.md, bench_deploy.csv and bench_deploy.json.
"""

from __future__ import annotations

import copy
import csv
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torchvision
from torch import nn

from colt_core.export import SlimTrace, l1_channel_mask, slim_model
from colt_core.io import atomic_write_json, atomic_write_text
from colt_core.prune.masks import masked_copy
from colt_det.export import detector_trace
from colt_det.model import build_vgg16_faster_rcnn

DETECTOR_OUTPUTS = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor.cls_score",
                    "roi_heads.box_predictor.bbox_pred")


def magnitude_mask_like(model: nn.Module, slim: nn.Module, mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per masked layer, the largest-|w| weights of `model`, as many as the slim layer has (ties: lower index)."""
    slim_params = dict(slim.named_parameters())
    out = {}
    for name, param in model.named_parameters():
        if name not in mask:
            continue
        weights = param.detach().abs().flatten()
        count = slim_params[name].numel() if name in slim_params else weights.numel()
        keep = torch.zeros_like(weights, dtype=torch.bool)
        keep[torch.argsort(-weights, stable=True)[:count]] = True
        out[name] = keep.view_as(param)
    return out


@dataclass
class Case:
    """One model to measure: how it is built, run, traced and exported."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[Any, ...]]  # the arguments of one forward
    trace: SlimTrace
    skip: tuple[str, ...] = ()


def cases(quick: bool) -> list[Case]:
    """The backbone and the detector at 600×600 and ResNet-18 at 224×224 (--quick: tiny widths and sizes)."""
    width, side, res_side, head_dim = (0.0625, 64, 32, 16) if quick else (1.0, 600, 224, 4096)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, side, side, generator=gen)
    res_image = torch.rand(1, 3, res_side, res_side, generator=gen)

    def detector() -> nn.Module:
        torch.manual_seed(0)
        return build_vgg16_faster_rcnn(21, width=width, head_dim=head_dim, min_size=side, max_size=side)

    def backbone() -> nn.Module:
        torch.manual_seed(0)
        return detector().backbone

    def resnet() -> nn.Module:
        torch.manual_seed(0)
        return torchvision.models.resnet18()

    return [Case("vgg16_backbone", backbone, lambda: (image,), SlimTrace((image[..., :64, :64],))),
            Case("detector", detector, lambda: ([image[0]],), detector_trace(), DETECTOR_OUTPUTS),
            Case("resnet18", resnet, lambda: (res_image,), SlimTrace((res_image,)), ("fc",))]


def median_latency(fn: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None] = lambda: None
                   ) -> float:
    """The median wall time of `fn` in milliseconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def onnx_session(model: nn.Module, args: tuple[Any, ...], threads: int, folder: Path, name: str) -> Any:
    """An onnxruntime session of `model` traced on `args`, with `threads` intra-op threads."""
    import onnxruntime

    path = folder / f"{name}.onnx"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, buffer, opset_version=17, dynamo=False)
    path.write_bytes(buffer.getvalue())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, args: tuple[Any, ...]) -> dict[str, np.ndarray]:
    flat = [a for arg in args for a in (arg if isinstance(arg, list) else [arg])]
    return {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}


def count(model: nn.Module, args: tuple[Any, ...], nonzero: bool) -> tuple[int, int]:
    """Parameters (nonzero ones when `nonzero`) and MACs of one forward, by Torch-Pruning's counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), args)
    if nonzero:
        params = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return int(params), int(macs)


def measure(case: Case, threads: Sequence[int], repeats: int, warmup: int, folder: Path,
            with_onnx: bool) -> list[dict[str, Any]]:
    """Every variant of one case: parameters, MACs, and latency per backend and thread count."""
    dense = case.build().eval()
    mask = l1_channel_mask(dense, case.trace, 0.5, case.skip)
    channel = slim_model(masked_copy(dense, mask), mask, case.trace).model.eval()
    unstructured = masked_copy(dense, magnitude_mask_like(dense, channel, mask)).eval()
    args = case.inputs()
    rows = []
    for variant, model in (("dense", dense), ("unstructured", unstructured), ("channel (slim)", channel)):
        params, macs = count(model, args, nonzero=variant == "unstructured")
        row: dict[str, Any] = {"model": case.name, "variant": variant, "parameters": params, "macs": macs}
        with torch.no_grad():
            for t in threads:
                torch.set_num_threads(t)
                row[f"torch_cpu_{t}t_ms"] = median_latency(lambda m=model: m(*args), repeats, warmup)
                if with_onnx:
                    session = onnx_session(model, args, t, folder, f"{case.name}_{variant.split()[0]}")
                    feeds = _feeds(session, args)
                    row[f"onnx_cpu_{t}t_ms"] = median_latency(lambda s=session, f=feeds: s.run(None, f), repeats,
                                                              warmup)
            if torch.cuda.is_available():
                gpu = copy.deepcopy(model).cuda()
                gpu_args = tuple([a.cuda() for a in x] if isinstance(x, list) else x.cuda() for x in args)
                row["torch_gpu_ms"] = median_latency(lambda g=gpu, a=gpu_args: g(*a), repeats, warmup,
                                                     torch.cuda.synchronize)
                del gpu
        rows.append(row)
    for row in rows:
        for key in [k for k in row if k.endswith("_ms")]:
            row[key.replace("_ms", "_speedup")] = rows[0][key] / row[key]
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The table: one row per model and variant, parameters, GMACs, then latency (ms) and speed-up per column."""
    timed = [k for k in rows[0] if k.endswith("_ms")]
    head = ["model", "variant", "parameters", "GMACs", *[f"{k.removesuffix('_ms')} ms (×)" for k in timed]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for row in rows:
        cells = [row["model"], row["variant"], f"{row['parameters'] / 1e6:.2f} M", f"{row['macs'] / 1e9:.3g}"]
        cells += [f"{row[k]:.1f} ({row[k.replace('_ms', '_speedup')]:.2f}×)" for k in timed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="tiny widths and sizes, 2 repeats, 1 thread: a smoke test")
@click.option("--repeats", type=int, default=20, show_default=True, help="timed runs per measurement")
@click.option("--warmup", type=int, default=3, show_default=True, help="untimed runs before them")
@click.option("--threads", default="1,2", show_default=True, help="CPU thread counts, comma-separated")
@click.option("--models", default="vgg16_backbone,detector,resnet18", show_default=True,
              help="which models, comma-separated")
@click.option("--no-onnx", is_flag=True, help="leave out ONNX Runtime")
@click.option("--out", type=click.Path(file_okay=False), default="runs/bench_deploy", show_default=True,
              help="folder for bench_deploy.md/.csv/.json")
def main(quick: bool, repeats: int, warmup: int, threads: str, models: str, no_onnx: bool, out: str) -> None:
    """Latency, parameters and MACs of dense, unstructured and channel (slim) tickets."""
    thread_counts = [int(t) for t in threads.split(",") if t.strip()]
    if quick:
        repeats, warmup, thread_counts = min(repeats, 2), 1, thread_counts[:1]
    wanted = {m.strip() for m in models.split(",")}
    chosen = [c for c in cases(quick) if c.name in wanted]
    if not chosen:
        raise click.BadParameter(f"none of {sorted(wanted)}; choose from vgg16_backbone, detector, resnet18",
                                 param_hint="--models")
    previous = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for case in chosen:
                rows += measure(case, thread_counts, repeats, warmup, Path(folder), not no_onnx)
    finally:
        torch.set_num_threads(previous)
    table = markdown(rows)
    title = (f"# Deployment benchmark{' (--quick)' if quick else ''}\n\nmedian of {repeats} runs after {warmup} "
             f"warm-up; × = speed-up over dense; CUDA: {torch.cuda.is_available()}\n\n")
    click.echo(title + table)
    out_dir = Path(out)
    atomic_write_text(title + table, out_dir / "bench_deploy.md")
    atomic_write_json({"quick": quick, "repeats": repeats, "warmup": warmup, "threads": thread_counts,
                       "rows": rows}, out_dir / "bench_deploy.json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buffer.getvalue(), out_dir / "bench_deploy.csv")


if __name__ == "__main__":
    main()
