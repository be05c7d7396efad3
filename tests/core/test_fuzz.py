"""Fuzzing the config loader: near-valid run configs of every registered task, and `--set` overrides, are accepted or
refused with a UserError, never another exception; an accepted config loads back from the YAML a run stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from colt_core.commands.train import load_run_config
from colt_core.config import ConfigError, flatten, from_dict, read_yaml, to_dict
from colt_core.registry import get_task, task_names
from tests.fuzzing import (
    AWKWARD_STRINGS,
    FUZZ,
    JUNK,
    KEYS,
    TEXT,
    accepted_or_refused,
    corrupted,
    mutated,
    neighbour,
    scratch_dir,
    yaml_text,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _valid_configs() -> dict[str, dict]:
    """Every shipped config, and every registered task's defaults, as plain data."""
    valid = {path.name: read_yaml(path) for path in sorted(CONFIGS.glob("*.yaml"))}
    for name in task_names():
        valid[f"{name} defaults"] = {**to_dict(get_task(name).config()), "task": name}
    return valid


VALID = _valid_configs()
# Keys of the right names in the wrong places: every section's and setting's name, from every config.
NAMES = sorted({part for config in VALID.values() for key in flatten(config) for part in key.split(".")} - {""})
CONFIG_KEYS = st.one_of(KEYS, st.sampled_from(NAMES), st.integers(-2, 2), st.booleans(), st.none())


def _loads_back(task: str | None, path: Path, overrides: list[str]) -> None:
    """Load the config; once accepted, the YAML a run directory stores of it must load to the same config."""
    entry, cfg = load_run_config(str(path), overrides, None, task=task)
    stored = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    again = from_dict(entry.config, yaml.safe_load(stored))
    assert yaml.safe_dump(to_dict(again), sort_keys=False) == stored


@FUZZ
@given(data=st.data(), base=st.sampled_from(sorted(VALID)), task=st.sampled_from([None, *task_names()]))
def test_fuzz_config_files(data: st.DataObject, base: str, task: str | None) -> None:
    tree = data.draw(mutated(VALID[base], keys=CONFIG_KEYS, max_mutations=5), label="config")
    path = scratch_dir("config") / "run.yaml"
    path.write_bytes(data.draw(corrupted(yaml_text(tree)), label="file"))
    accepted_or_refused("config files", lambda: _loads_back(task, path, []))


RAW_VALUES = st.sampled_from([
    "", " ", "[", "]", "{", "{a: [1, 2}", "[1, [2, [3]]]", "'unterminated", '"\\x"', "!!python/object/apply:os.system "
    "['true']", "!!binary AAAA", "&a [*a, *a]", "*nowhere", "- a\n- b", "a: b: c", "key: [", "\t", "%YAML 1.1",
    "? a", "|", ">", "---", "...", "=", "==", "a=b", ".nan", "-.inf", "1e999", "0x1F", "0o17", "1_000", "~", "null",
    "yes", "on", "2024-01-01", "12:30", "ünï", "💥", "\x00", "a\x85b",
])


def _yaml_value(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).removesuffix("\n...\n").strip()


@st.composite
def override(draw: st.DrawFn, flat: dict[str, object]) -> str:
    """One `--set` string: mostly a real key with its own value, one a slip away from it or another key's, else a
    near miss of a key, a YAML value that is not one, or a string that is no KEY=VALUE at all."""
    real = st.sampled_from(sorted(flat))
    key = draw(st.one_of(real, real, real, real, TEXT, AWKWARD_STRINGS))
    key = draw(st.sampled_from([key] * 6 + [f"{key}.x", key.rpartition(".")[0], f".{key}", f"{key}.",
                                            key.replace(".", ".."), f" {key} ", f"{key}[0]", key.upper()]))
    own = flat.get(key)
    value = draw(st.one_of(st.just(own), neighbour(own), neighbour(own), st.sampled_from(list(flat.values())),
                           JUNK).map(_yaml_value) | RAW_VALUES | TEXT)
    return draw(st.sampled_from([f"{key}={value}"] * 6 + [key, f"={value}", f"{key}=={value}", f"{key}: {value}"]))


@FUZZ
@given(data=st.data(), base=st.sampled_from(sorted(VALID)))
def test_fuzz_set_overrides(data: st.DataObject, base: str) -> None:
    path = scratch_dir("overrides") / "run.yaml"
    path.write_text(yaml_text(VALID[base]), encoding="utf-8")
    overrides = data.draw(st.lists(override(flatten(VALID[base])), min_size=1, max_size=2), label="overrides")
    accepted_or_refused("--set overrides", lambda: _loads_back(None, path, overrides))


def test_a_config_that_is_not_utf8_is_refused_with_its_name() -> None:
    """Found by the fuzzer: a byte that is no UTF-8 escaped the loader as a UnicodeDecodeError."""
    path = scratch_dir("not-utf8") / "run.yaml"
    path.write_bytes(b"\x80" + yaml_text(VALID["voc_synth_tiny.yaml"]).encode())
    with pytest.raises(ConfigError, match=r"run\.yaml: not a YAML text file \(byte 0 is not UTF-8\)"):
        load_run_config(str(path), [], None)
