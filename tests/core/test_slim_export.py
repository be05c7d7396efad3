"""Slim exports of channel masks on a small task-agnostic network: cuts, folded constants, files, ONNX, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from colt_core.errors import UserError
from colt_core.export import (
    ExportError,
    SlimTrace,
    dead_channels,
    export_onnx,
    is_channel_mask,
    l1_channel_mask,
    read_slim,
    run_onnx,
    save_slim,
    slim_model,
)
from colt_core.export.slim import relative_difference, trace_outputs
from colt_core.io import atomic_save
from colt_core.prune.masks import masked_copy

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


class ResidualNet(nn.Module):
    """A 3×3 stem, a block of two 1×1 convs whose output is added to the stem's, a 1×1 conv, pooling, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 12, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(12)
        self.project = nn.Conv2d(12, 8, 1)
        self.last = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.project(torch.relu(self.expand_bn(self.expand(x))))
        return self.head(torch.relu(self.last(x)).mean((2, 3)))


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Nonzero biases and norm statistics everywhere, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) - 0.5)
    return model.eval()


TRACE = SlimTrace((torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1)),))


def test_a_channel_mask_cuts_coupled_channels_and_folds_their_constants_exactly():
    torch.manual_seed(0)
    model = trained_looking(ResidualNet())
    mask = l1_channel_mask(model, TRACE, 0.5, skip=("head",))
    # The residual sum couples the stem and the projection: the same channels are off in both.
    stem_off, project_off = dead_channels(model, mask)["stem"], dead_channels(model, mask)["project"]
    assert torch.equal(stem_off, project_off) and int(stem_off.sum()) == 4
    masked = masked_copy(model, mask)
    assert is_channel_mask(masked, mask)

    result = slim_model(copy.deepcopy(masked), mask, TRACE)
    slim = result.model
    assert (slim.stem.out_channels, slim.bn.num_features, slim.expand.in_channels) == (4, 4, 4)
    assert (slim.expand.out_channels, slim.project.in_channels, slim.project.out_channels) == (6, 6, 4)
    assert (slim.last.in_channels, slim.last.out_channels, slim.head.in_features) == (4, 8, 8)
    assert result.kept["stem"] == result.kept["project"] == result.kept["bn"]
    expected = (4 * 3 * 9 + 4) + 2 * 4 + 6 * 4 + 2 * 6 + (4 * 6 + 4) + (8 * 4 + 8) + (5 * 8 + 5) + 6  # + folded bias
    assert result.parameters_after == expected == sum(p.numel() for p in slim.parameters())
    # Every removed channel outputs a nonzero constant here; the 1×1 convs and the head take it into their biases.
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_difference([slim(x)], [masked(x)]) < 1e-5
    assert relative_difference(trace_outputs(slim, TRACE), trace_outputs(masked, TRACE)) < 1e-5


def test_a_mask_with_a_filter_partly_on_is_refused_in_one_line():
    model = ResidualNet().eval()
    mask = {"stem.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool)}
    mask["stem.weight"][2, 0, 1, 1] = False
    with pytest.raises(UserError) as caught:
        slim_model(model, mask, TRACE)
    assert isinstance(caught.value, ExportError) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("not a channel mask: 1 of the 8 filters of stem.weight are partly pruned")
    assert not is_channel_mask(model, mask)
    # A linear layer's weight-level mask removes no neuron and is no reason to refuse.
    head = {"head.weight": torch.rand(5, 16, generator=torch.Generator().manual_seed(0)) > 0.5}
    assert dead_channels(model, head) == {}


def test_the_slim_file_holds_plain_data_and_refuses_other_files(tmp_path):
    torch.manual_seed(0)
    model = ResidualNet().eval()
    mask = l1_channel_mask(model, TRACE, 0.5, skip=("head",))
    result = slim_model(masked_copy(model, mask), mask, TRACE)
    save_slim(tmp_path / "slim.pt", {"name": "residualnet", "task": "none"}, result)
    payload = torch.load(tmp_path / "slim.pt", weights_only=True)  # no pickled module
    assert payload["cuts"] == result.cuts and payload["kept"]["stem"] == result.kept["stem"]
    assert payload["parameters"] == {"full": result.parameters_before, "slim": result.parameters_after}
    assert read_slim(tmp_path / "slim.pt")["architecture"]["name"] == "residualnet"
    atomic_save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match=r"other.pt is not a COLT slim file .* pass the slim.pt"):
        read_slim(tmp_path / "other.pt")
    with pytest.raises(ExportError, match="slim file not found"):
        read_slim(tmp_path / "missing.pt")


def test_the_slim_model_exports_to_onnx_with_equal_outputs(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = trained_looking(ResidualNet())
    mask = l1_channel_mask(model, TRACE, 0.5, skip=("head",))
    slim = slim_model(masked_copy(model, mask), mask, TRACE).model
    x = TRACE.example_inputs[0]
    path = export_onnx(slim, (x,), tmp_path / "slim.onnx", input_names=["images"], output_names=["logits"])
    (got,) = run_onnx(path, {"images": x.numpy()})
    with torch.no_grad():
        assert relative_difference([torch.from_numpy(got)], [slim(x)]) < 1e-5
