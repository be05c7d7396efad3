"""Typed YAML configs: dataclasses with a help string per field, checked once at load.

Every problem (unknown key, wrong type, value out of range) is reported as one `ConfigError`
line naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from colt_core.errors import UserError

T = TypeVar("T")

Check = Callable[[Any], "str | None"]


class ConfigError(UserError, ValueError):
    """A config value is unknown, of the wrong type or out of range."""


def field(default: Any = dataclasses.MISSING, *, help: str, check: Check | None = None,
          default_factory: Any = dataclasses.MISSING, one_or_more: bool = False) -> Any:
    """A dataclass field carrying its help text and an optional value check. `one_or_more` (for a list field
    such as a list of paths): a single value is read as a list of that one value (`--set data.images=DIR`)."""
    metadata = {"help": help, "check": check, "one_or_more": one_or_more}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def open_interval(lo: float, hi: float) -> Check:
    """Check for lo < x < hi."""
    return lambda x: None if lo < x < hi else f"must be in ({lo}, {hi}), got {x}"


def closed_interval(lo: float, hi: float) -> Check:
    """Check for lo <= x <= hi."""
    return lambda x: None if lo <= x <= hi else f"must be in [{lo}, {hi}], got {x}"


def at_least(lo: float) -> Check:
    """Check for x >= lo."""
    return lambda x: None if x >= lo else f"must be >= {lo}, got {x}"


def positive(x: Any) -> str | None:
    """Check for x > 0."""
    return None if x > 0 else f"must be > 0, got {x}"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a).lower() if isinstance(a, bool) else repr(a) for a in get_args(tp))  # YAML spelling
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple, Sequence):
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], key)  # its own error says more than the union's
        for arg in options:
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _one_as_list(value: Any, tp: Any, key: str) -> Any:
    """A single value of a `one_or_more` list field, as the list of that one value."""
    try:
        return _convert([value], tp, key)
    except ConfigError:
        raise ConfigError(f"{key}: expected a {_type_name(tp)}, or one {_type_name(get_args(tp)[0])}, got "
                          f"{value!r}") from None


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, checking keys, types and ranges. A class may name keys it
    used to have in `MOVED_KEYS` ({old key: its new place}); such a key is refused with its new place."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        moved = getattr(cls, "MOVED_KEYS", {}).get(unknown[0])  # a section may list keys that moved elsewhere
        if moved is not None:
            raise ConfigError(f"{where}: moved; write it as {prefix + '.' if prefix else ''}{moved}")
        raise ConfigError(f"{where}: unknown key; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required setting ({f.metadata.get('help', '')})")
            continue
        raw = data[name]
        has_factory = f.default_factory is not dataclasses.MISSING
        if get_origin(hints[name]) is dict and isinstance(raw, Mapping) and has_factory:
            # Mappings with defaults (e.g. per-group rates) are merged, so one entry can be overridden alone.
            raw = {**f.default_factory(), **raw}
        if f.metadata.get("one_or_more") and not isinstance(raw, list | tuple | Mapping) and raw is not None:
            value = _one_as_list(raw, hints[name], key)
        else:
            value = _convert(raw, hints[name], key)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{key}: {problem}")
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for sub_key, problem in validate():
            raise ConfigError(f"{prefix + '.' if prefix else ''}{sub_key}: {problem}")
    return obj


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as {"a.b": value} (lists of mappings as "a[0].b"), for comparing two configs."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-friendly data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def resolve_config_path(name: str | Path, configs_dir: str | Path) -> Path:
    """A path as given when it exists, else `configs_dir/name` (with or without `.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (Path(configs_dir) / path, Path(configs_dir) / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.name for p in Path(configs_dir).glob("*.yaml"))
    raise ConfigError(f"--cfg {name}: no such file, nor under {configs_dir}; available: {', '.join(available)}")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `--set a.b=value` (value parsed as YAML) to a nested mapping in place."""
    if "=" not in override:
        raise ConfigError(f"--set {override}: expected KEY=VALUE, e.g. --set train.epochs=2")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {override}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override}: value is not valid YAML ({exc})") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on a parse error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8); save the config as "
                          "UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def load_config(cls: type[T], cfg: str | Path | None, overrides: Sequence[str] = (),
                configs_dir: str | Path = "configs") -> T:
    """Load `cfg` (a path or a name under `configs_dir`), apply `--set` overrides, check, build `cls`."""
    data: dict[str, Any] = {}
    if cfg is not None:
        data = read_yaml(resolve_config_path(cfg, configs_dir))
    for override in overrides:
        apply_override(data, override)
    return from_dict(cls, data)
