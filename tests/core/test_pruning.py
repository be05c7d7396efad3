import pytest
import torch
from torch import nn

from colt_core.prune.magnitude import (
    LayerCollapseError,
    PruneGroup,
    _kth_and_count,
    magnitude_prune,
    prune_count,
    resolve_prune_groups,
)
from colt_core.prune.masks import MaskKeeper, apply_mask, intersect_masks, ones_mask
from colt_core.prune.sparsity import pruned_similarity, sparsity_report
from colt_core.prune.weights import rewind, snapshot


def test_paper_table_ii_toy_example():
    init = torch.tensor([[0.1, -0.2, 0.9], [-0.4, 0.6, 0.8], [0.3, 0.5, -0.7]])
    trained_1 = torch.tensor([[0.8, -0.3, 0.4], [-0.1, 0.2, 0.7], [0.9, 0.5, -0.5]])
    trained_2 = torch.tensor([[0.9, -0.7, 0.2], [-0.1, 0.4, 0.5], [0.8, 0.3, -0.6]])
    group = [PruneGroup("w", 2 / 9, ("w",))]
    start = {"w": torch.ones(3, 3, dtype=torch.bool)}
    m1 = magnitude_prune({"w": trained_1}, start, group)
    m2 = magnitude_prune({"w": trained_2}, start, group)
    assert m1["w"].int().tolist() == [[1, 1, 1], [0, 0, 1], [1, 1, 1]]
    assert m2["w"].int().tolist() == [[1, 1, 0], [0, 1, 1], [1, 1, 1]]
    m = intersect_masks([m1, m2])
    assert m["w"].int().tolist() == [[1, 1, 0], [0, 0, 1], [1, 1, 1]]
    assert torch.equal(init * m["w"], torch.tensor([[0.1, -0.2, 0.0], [0.0, 0.0, 0.8], [0.3, 0.5, -0.7]]))


@pytest.mark.filterwarnings("ignore:layer collapse")
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
def test_exact_count_of_surviving_weights_across_layers(rate):
    gen = torch.Generator().manual_seed(1)
    weights = {"a": torch.randn(40, 30, generator=gen), "b": torch.randn(7, 5, 3, 3, generator=gen) * 0.1}
    mask = {k: torch.rand(v.shape, generator=gen) > 0.3 for k, v in weights.items()}
    alive = sum(int(m.sum()) for m in mask.values())
    new = magnitude_prune(weights, mask, [PruneGroup("g", rate, ("a", "b"))], on_layer_collapse="warn")
    pruned_now = alive - sum(int(m.sum()) for m in new.values())
    assert pruned_now == prune_count(rate, alive)
    for k in weights:
        assert not (new[k] & ~mask[k]).any()  # dead weights stay dead
    # global: every surviving weight outweighs every weight pruned this round
    survivors = torch.cat([weights[k].abs()[new[k]] for k in weights])
    removed = torch.cat([weights[k].abs()[mask[k] & ~new[k]] for k in weights])
    assert survivors.min() >= removed.max()


def test_ties_broken_by_position_deterministically():
    weights = {"a": torch.ones(10), "b": torch.ones(10)}
    mask = {k: torch.ones(10, dtype=torch.bool) for k in weights}
    new = magnitude_prune(weights, mask, [PruneGroup("g", 0.25, ("a", "b"))])
    assert new["a"].tolist() == [False] * 5 + [True] * 5
    assert new["b"].all()
    assert torch.equal(magnitude_prune(weights, mask, [PruneGroup("g", 0.25, ("a", "b"))])["a"], new["a"])


def test_band_selection_matches_full_selection():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(50_000, generator=gen).abs()
    scores[:5000] = float("inf")
    scores[100:200] = 0.5  # ties straddling typical thresholds
    for k in (1, 777, 20_000, 44_999, 45_000):
        value = float(torch.kthvalue(scores, k).values)
        assert _kth_and_count(scores, k, sample_size=512) == (value, int((scores <= value).sum()))


class Net(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 16)
        self.head = nn.Linear(16, out)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x)).mean((2, 3))
        return self.head(torch.relu(self.fc(x)))


SPECS = {"conv": {"types": ["Conv2d"]}, "fc": {"types": ["Linear"]}}


def test_groups_exclude_outputs_biases_and_norms():
    groups = resolve_prune_groups(Net(), SPECS, {"conv": 0.15, "fc": 0.2}, output_layers=["head"])
    assert {g.name: g.params for g in groups} == {"conv": ("conv1.weight", "conv2.weight"), "fc": ("fc.weight",)}


def test_each_group_prunes_at_its_own_rate():
    torch.manual_seed(0)
    model = Net()
    groups = resolve_prune_groups(model, SPECS, {"conv": 0.15, "fc": 0.5}, output_layers=["head"])
    mask = ones_mask(model, [n for g in groups for n in g.params])
    new = magnitude_prune(dict(model.named_parameters()), mask, groups)
    report = sparsity_report(new, groups, sum(p.numel() for p in model.parameters()))
    conv_total = 8 * 3 * 9 + 8 * 8 * 9
    assert report["groups"]["conv"]["pruned"] == prune_count(0.15, conv_total)
    assert report["groups"]["fc"]["pruned"] == prune_count(0.5, 128)
    assert report["prune_rate"]["zero_params"] == report["overall"]["pruned"]


@pytest.mark.parametrize("bad", [
    dict(specs=SPECS, rates={"conv": 0.1, "fc": 0.2}, output_layers=["classifier"]),
    dict(specs={"conv": {"types": ["Conv2d"], "include": ["^conv9"]}}, rates={"conv": 0.1}, output_layers=[]),
    dict(specs={"norm": {"types": ["BatchNorm2d"]}}, rates={"norm": 0.1}, output_layers=[]),
    dict(specs=SPECS, rates={"conv": 0.1, "fc": 0.2, "attn": 0.1}, output_layers=[]),
    dict(specs=SPECS, rates={"conv": 1.5, "fc": 0.2}, output_layers=[]),
    dict(specs={"a": {"types": ["Linear"]}, "b": {"types": ["Linear"]}}, rates={"a": 0.1, "b": 0.1},
         output_layers=[]),
])
def test_group_config_naming_nothing_or_overlapping_is_an_error(bad):
    with pytest.raises(ValueError):
        resolve_prune_groups(Net(), bad["specs"], bad["rates"], bad["output_layers"])


def test_layer_collapse_is_an_error_or_a_warning():
    weights = {"a": torch.full((4,), 0.01), "b": torch.ones(100)}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}
    group = [PruneGroup("g", 0.1, ("a", "b"))]
    with pytest.raises(LayerCollapseError, match="a"):
        magnitude_prune(weights, mask, group)
    with pytest.warns(RuntimeWarning, match="layer collapse"):
        magnitude_prune(weights, mask, group, on_layer_collapse="warn")


def test_nan_weights_are_reported():
    weights = {"a": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ValueError, match="NaN"):
        magnitude_prune(weights, {"a": torch.ones(2, dtype=torch.bool)}, [PruneGroup("g", 0.5, ("a",))])


def test_rewind_restores_init_for_survivors_and_zero_for_pruned():
    torch.manual_seed(0)
    model = Net()
    init = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    mask = {"conv1.weight": torch.rand(8, 3, 3, 3) > 0.5}
    rewind(model, init, mask)
    w = model.conv1.weight.detach()
    assert torch.equal(w[mask["conv1.weight"]], init["conv1.weight"][mask["conv1.weight"]])
    assert (w[~mask["conv1.weight"]] == 0).all()
    assert torch.equal(model.fc.weight, init["fc.weight"])


def test_rewind_keeps_a_head_of_another_size():
    init = snapshot(Net(out=5))
    model = Net(out=2)
    head = model.head.weight.detach().clone()
    rewind(model, init, {}, output_layers=["head"], keep_output=True)
    assert torch.equal(model.head.weight, head)
    assert torch.equal(model.conv2.weight, init["conv2.weight"])
    with pytest.raises(ValueError, match=r"head\.weight"):
        rewind(Net(out=2), init, {})


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-4),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2),
])
def test_pruned_weights_stay_exactly_zero_and_optimizer_state_is_zeroed(make_opt):
    torch.manual_seed(0)
    model = Net()
    opt = make_opt(model.parameters())
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    # Dense steps first, so the optimizer holds non-zero state where the mask will prune.
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    mask = {"conv1.weight": torch.rand(8, 3, 3, 3) > 0.5, "fc.weight": torch.rand(16, 8) > 0.5}
    keeper = MaskKeeper(model, mask, opt)
    keeper.zero_optimizer_state()
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        keeper.before_step()
        opt.step()
        keeper.after_step()
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert (params[name].detach()[~m] == 0).all()
        assert (params[name].detach()[m] != 0).any()
        for buf in opt.state[params[name]].values():
            if torch.is_tensor(buf) and buf.shape == m.shape:
                assert (buf[~m] == 0).all()


def test_apply_mask_and_similarity():
    model = Net()
    mask = {"fc.weight": torch.zeros(16, 8, dtype=torch.bool)}
    apply_mask(model, mask)
    assert (model.fc.weight == 0).all()
    a = {"w": torch.tensor([0, 0, 1, 1], dtype=torch.bool)}
    b = {"w": torch.tensor([0, 1, 0, 1], dtype=torch.bool)}
    assert pruned_similarity(a, b) == 0.25
    assert pruned_similarity(a, b, total_params=8) == 0.125
    with pytest.raises(ValueError):
        apply_mask(model, {"fc.weight": torch.zeros(3, dtype=torch.bool)})


def test_large_group_with_ties_matches_a_stable_sort_reference():
    # Large enough for the sampled-band selection; quantised values give many ties at the threshold.
    gen = torch.Generator().manual_seed(3)
    weights = {"a": torch.randint(-50, 51, (3000, 2000), generator=gen).float() / 50,
               "b": torch.randint(-50, 51, (1000, 1000), generator=gen).float() / 50}
    mask = {"a": torch.rand(3000, 2000, generator=gen) > 0.1, "b": torch.ones(1000, 1000, dtype=torch.bool)}
    new = magnitude_prune(weights, mask, [PruneGroup("g", 0.3, ("a", "b"))], on_layer_collapse="warn")
    flat_w = torch.cat([weights[k].abs().flatten() for k in ("a", "b")])
    flat_m = torch.cat([mask[k].flatten() for k in ("a", "b")])
    scores = flat_w.masked_fill(~flat_m, float("inf"))
    k = prune_count(0.3, int(flat_m.sum()))
    order = torch.sort(scores, stable=True).indices  # ties: earlier positions first
    expected = flat_m.clone()
    expected[order[:k]] = False
    got = torch.cat([new[k_].flatten() for k_ in ("a", "b")])
    assert torch.equal(got, expected)


def test_layerwise_pruning_takes_each_layers_share_where_global_would_empty_a_layer():
    from colt_core.prune.magnitude import per_layer

    small = torch.full((10,), 0.01) + torch.arange(10) * 1e-4  # a layer of tiny weights beside a large one
    large = torch.full((30,), 1.0) + torch.arange(30) * 1e-3
    weights = {"a": small, "b": large}
    mask = {"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(30, dtype=torch.bool)}
    group = [PruneGroup("conv", 0.25, ("a", "b"))]
    with pytest.raises(LayerCollapseError, match=r"\['a'\]"):
        magnitude_prune(weights, mask, group)  # global: the 10 smallest of 40 are all of layer a
    layered = magnitude_prune(weights, mask, per_layer(group))
    assert (int((~layered["a"]).sum()), int((~layered["b"]).sum())) == (prune_count(0.25, 10), prune_count(0.25, 30))
    assert layered["a"].tolist() == [False] * 3 + [True] * 7  # each layer's own smallest
    assert [g.name for g in per_layer(group)] == ["conv:a", "conv:b"]
