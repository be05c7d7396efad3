"""Near-valid inputs for fuzzing the loaders: a valid instance (a config, an instances file, an annotation) with a
few mutations (wrong types, missing keys, negative, NaN and huge numbers, strings where lists go, nested junk,
unicode, duplicated entries), serialised and sometimes corrupted byte-wise, so that the fuzzer reaches the
checks deep inside a loader and not only its first parse.

The property every loader keeps: an input is accepted, or refused with a `colt_core.errors.UserError`; any other
exception is a bug. `accepted_or_refused` checks it and counts outcomes per target; `FUZZ` is the hypothesis
profile (`COLT_FUZZ_EXAMPLES` examples per target, 200 by default; derandomized, so every run tries the same
inputs). `benchmarks/fuzz_inputs.py` runs the same targets at any size, and with `--seed` on other inputs.
"""

from __future__ import annotations

import atexit
import copy
import json
import math
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from colt_core.errors import UserError

EXAMPLES = int(os.environ.get("COLT_FUZZ_EXAMPLES", "200"))
SEEDED = bool(os.environ.get("COLT_FUZZ_SEED"))  # the benchmark's --seed: other inputs than the suite's
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not SEEDED, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))
OUTCOMES: dict[str, Counter[str]] = defaultdict(Counter)  # target -> {"accepted", "refused", "failed"}: count


def accepted_or_refused(target: str, call: Callable[[], Any]) -> str:
    """Run `call`; "accepted" when it returns, "refused" when it raises a UserError. Anything else is re-raised
    (hypothesis then shrinks the input and reports it)."""
    try:
        call()
    except UserError:
        outcome = "refused"
    except BaseException:
        OUTCOMES[target]["failed"] += 1
        raise
    else:
        outcome = "accepted"
    OUTCOMES[target][outcome] += 1
    return outcome


_scratch: list[Path] = []


def scratch_dir(name: str) -> Path:
    """A folder under one temporary directory of this process (removed at exit), emptied on every call."""
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="colt-fuzz-")))
        atexit.register(shutil.rmtree, _scratch[0], ignore_errors=True)
    path = _scratch[0] / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ----- values ------------------------------------------------------------------------------------------
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates: UTF-8 files
AWKWARD_STRINGS = st.sampled_from([
    "", " ", "\t", "\n", "../outside.jpg", "../../etc/passwd", "/etc/passwd", "a/../../b.jpg", "sub/dir.jpg",
    "C:\\windows\\x.jpg", "x\x00y", "ünïcödé.jpg", "猫", "💥", "null", "~", "NaN", "nan", "inf", "1e999", "-1", "0",
    "0x1F", "true", "yes", "off", "[1, 2]", "{}", "a" * 300, "%s%n", "${HOME}", "'", '"', "<tag>", "&amp;",
])
NUMBERS = st.one_of(
    st.integers(-3, 3), st.integers(), st.floats(), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([0, -1, 2**31, 2**31 - 1, 2**53 + 1, 2**63, 2**64, 10**30, -(10**30), 10**400, 0.5, -0.0,
                     1e-300, 1e308, math.nan, math.inf, -math.inf]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, AWKWARD_STRINGS)
KEYS = st.one_of(TEXT, AWKWARD_STRINGS)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(KEYS, inner, max_size=3)), max_leaves=6)


def _neighbours(value: Any) -> list[Any]:
    """Values a slip of the hand away from `value`, of its type and of others."""
    if isinstance(value, bool):
        return [not value, int(value), str(value).lower(), None]
    if isinstance(value, int):
        return [value + 1, value - 1, -value, 0, -1, value * 10**12, value + 0.5, float(value), str(value), math.nan,
                [value]]
    if isinstance(value, float):
        return [-value, 0.0, value * 1e300, math.nan, math.inf, -math.inf, int(value) if math.isfinite(value) else 0,
                str(value)]
    if isinstance(value, str):
        return ["", value + "x", value[:-1], value.upper(), "../" + value, "/" + value, value * 40, value + "é",
                f" {value} ", [value], 1]
    if isinstance(value, list):
        return [[], value[:-1], value * 2, value[::-1], value[0] if value else None, {}, "[]", [value]]
    if isinstance(value, dict):
        keys = list(value)
        return [{}, list(value.values()), {k: value[k] for k in keys[1:]}, [value], "{}", None]
    return [0, "", [], {}]


def _slots(holder: list[Any]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value of the tree held in `holder[0]`, the root included."""
    stack: list[tuple[Any, Any]] = [(holder, 0)]
    while stack:
        container, key = stack.pop()
        yield container, key
        value = container[key]
        if isinstance(value, dict):
            stack.extend((value, k) for k in value)
        elif isinstance(value, list):
            stack.extend((value, i) for i in range(len(value)))


def neighbour(value: Any) -> st.SearchStrategy[Any]:
    """A value a slip of the hand away from `value`."""
    return st.sampled_from(_neighbours(value))


MUTATIONS = ("junk", "neighbour", "neighbour", "delete", "delete", "insert", "duplicate", "wrap", "stringify")


@st.composite
def mutated(draw: st.DrawFn, valid: Any, *, keys: st.SearchStrategy[Any] = KEYS, max_mutations: int = 4) -> Any:
    """A copy of `valid` (a tree of dicts, lists and scalars) with 0 to `max_mutations` mutations."""
    holder = [copy.deepcopy(valid)]
    for _ in range(draw(st.integers(0, max_mutations))):
        container, key = draw(st.sampled_from(list(_slots(holder))))
        value, op = container[key], draw(st.sampled_from(MUTATIONS))
        if op == "junk":
            container[key] = draw(JUNK)
        elif op == "neighbour":
            container[key] = draw(st.sampled_from(_neighbours(value)))
        elif op == "delete" and container is not holder:
            del container[key]
        elif op == "insert" and isinstance(value, dict):
            value[draw(keys)] = draw(JUNK)
        elif op == "insert" and isinstance(value, list):
            value.insert(draw(st.integers(0, len(value))), draw(JUNK))
        elif op == "duplicate" and isinstance(value, list) and value:
            value.append(copy.deepcopy(draw(st.sampled_from(value))))
        elif op == "wrap":
            container[key] = [value]
        elif op == "stringify":
            container[key] = str(value)
    return holder[0]


# ----- files -------------------------------------------------------------------------------------------
CORRUPTIONS = ("truncate", "bytes", "latin-1", "utf-16", "bom", "empty")


@st.composite
def corrupted(draw: st.DrawFn, text: str) -> bytes:
    """`text` as UTF-8, as it is four times in five, else truncated, with stray bytes, in another encoding, or
    empty."""
    data = text.encode("utf-8")
    if draw(st.integers(0, 4)) < 4:  # shrinks towards the file as it is
        return data
    op = draw(st.sampled_from(CORRUPTIONS))
    if op == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if op == "bytes":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if op == "latin-1":
        return text.encode("latin-1", "replace")
    if op == "utf-16":
        return text.encode("utf-16")
    if op == "bom":
        return b"\xef\xbb\xbf" + data
    if op == "empty":
        return b""
    return data


def json_text(tree: Any) -> str:
    """`tree` as JSON as Python writes it (NaN and Infinity included, as some exporters write them)."""
    return json.dumps(tree, ensure_ascii=False)


def yaml_text(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


def json_file(valid: Any, **kwargs: Any) -> st.SearchStrategy[bytes]:
    """The bytes of a JSON file holding a mutation of `valid`."""
    return mutated(valid, **kwargs).flatmap(lambda tree: corrupted(json_text(tree)))


def report(outcomes: dict[str, Counter[str]] | None = None) -> list[str]:
    """One line per target: inputs tried, accepted, refused (and failed, when any)."""
    lines = []
    for target, counts in sorted((outcomes or OUTCOMES).items()):
        tried = sum(counts.values())
        failed = f", {counts['failed']} failed" if counts["failed"] else ""
        lines.append(f"{target}: {tried} inputs, {counts['accepted']} accepted, {counts['refused']} refused{failed}")
    return lines
