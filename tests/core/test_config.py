from dataclasses import dataclass

import pytest

from colt_core.config import ConfigError, field, from_dict, load_config, positive, to_dict
from colt_core.settings import PruneConfig, SplitConfig, check_partitions


@dataclass
class Train:
    epochs: int = field(2, help="epochs", check=positive)
    lr: float = field(0.1, help="learning rate", check=positive)


@dataclass
class Run:
    seed: int = field(0, help="seed")
    output_dir: str = field("runs/x", help="where")
    prune: PruneConfig = field(default_factory=PruneConfig, help="pruning")
    split: SplitConfig = field(default_factory=SplitConfig, help="split")
    train: Train = field(default_factory=Train, help="training")


@pytest.mark.parametrize("data, key", [
    ({"trian": {}}, "trian"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"prune": {"rates": {"conv": 1.2}}}, "prune.rates.conv"),
    ({"prune": {"rates": {"conv": 0.0}}}, "prune.rates.conv"),
    ({"prune": {"partitions": 0}}, "prune.partitions"),
    ({"prune": {"method": "imp"}}, "prune.method"),
    ({"prune": {"target_sparsity": 1.0}}, "prune.target_sparsity"),
    ({"seed": True}, "seed"),
    ({"prune": {"groups": {"conv": {"typs": ["Conv2d"]}}}}, "prune.groups.conv.typs"),
    ({"prune": {"groups": {"attn": {"types": ["Linear"]}}}}, "prune.rates"),
])
def test_bad_values_fail_with_one_line_naming_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(Run, data)
    message = str(err.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message


def test_round_trip_and_overrides(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("seed: 4\ntrain:\n  epochs: 3\nprune:\n  method: lth\n")
    cfg = load_config(Run, "demo.yaml", ["train.lr=0.5", "prune.rates.fc=0.25"], configs_dir=tmp_path / "configs")
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr, cfg.prune.method) == (4, 3, 0.5, "lth")
    assert cfg.prune.rates == {"conv": 0.15, "fc": 0.25}
    assert cfg.prune.n_partitions == 1
    assert from_dict(Run, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"available: demo\.yaml"):
        load_config(Run, "nope.yaml", configs_dir=tmp_path / "configs")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(Run, "demo", ["train.lr"], configs_dir=tmp_path / "configs")
    with pytest.raises(ConfigError, match=r"train\.lr2: unknown key"):
        load_config(Run, "demo", ["train.lr2=1"], configs_dir=tmp_path / "configs")


def test_partition_cross_checks():
    assert check_partitions(PruneConfig(partitions=21), SplitConfig(), 20)[0][0] == "prune.partitions"
    assert check_partitions(PruneConfig(partitions=2), SplitConfig(groups=[[0], [1], [2]]), 3)[0][0] == "split.groups"
    assert check_partitions(PruneConfig(method="lth", partitions=30), SplitConfig(), 20) == []


@dataclass
class Data:
    images: list[str] = field(default_factory=list, help="image folders", one_or_more=True)
    annotations: tuple[str, ...] = field((), help="annotation files", one_or_more=True)
    types: list[str] = field(default_factory=list, help="module class names")


def test_a_list_field_marked_one_or_more_takes_a_single_value_as_a_list_of_one(tmp_path):
    assert from_dict(Data, {"images": "train2017", "annotations": "a.json"}) == Data(["train2017"], ("a.json",))
    assert from_dict(Data, {"images": ["a", "b"], "annotations": ["x"]}) == Data(["a", "b"], ("x",))
    (tmp_path / "data.yaml").write_text("images: mine/train\n")
    loaded = load_config(Data, tmp_path / "data.yaml", ["annotations=mine/train.json"])
    assert (loaded.images, loaded.annotations) == (["mine/train"], ("mine/train.json",))
    with pytest.raises(ConfigError, match=r"^images: expected a list of str, or one str, got 3$"):
        from_dict(Data, {"images": 3})
    with pytest.raises(ConfigError, match=r"^images\[1\]: expected a string, got 4$"):
        from_dict(Data, {"images": ["a", 4]})
    with pytest.raises(ConfigError, match=r"^images: expected a list, got \{'a': 1\}$"):
        from_dict(Data, {"images": {"a": 1}})
    # A list field not marked keeps refusing a single value.
    with pytest.raises(ConfigError, match=r"^types: expected a list, got 'Conv2d'$"):
        from_dict(Data, {"types": "Conv2d"})
