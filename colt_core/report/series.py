"""Series: runs of one setup that differ only in their seed, and the spread (mean ± sample std) of what they
measured, so that a difference between methods can be told from seed noise; plus the config keys on which
compared runs differ beyond what a comparison varies.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from colt_core.config import flatten
from colt_core.report.compared_runs import ComparedRun

# Keys that legitimately differ between the runs of one setup: what is compared, when a run stops, what it
# evaluates, and where it is written.
IGNORED_CONFIG_KEYS = ("prune.method", "prune.partitions", "prune.rates", "prune.max_rounds",
                       "prune.target_sparsity", "prune.evaluate", "prune.controls", "output_dir")
# Keys that differ between the runs of one series: the seeds of one setup, each in its own folder.
SERIES_KEYS = ("seed", "output_dir")


@dataclass
class Series:
    """Runs of one setup that differ only in their seed: what varies between them is the seeds' noise."""

    label: str  # a single run's own label; several: "COLT-2 (3 seeds: 0, 1, 2)"
    runs: list[ComparedRun]

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]


def _matches(key: str, keys: Sequence[str]) -> bool:
    """Whether a flattened config key is one of `keys` or inside one of them."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def _setup(run: ComparedRun) -> dict[str, Any]:
    """What the runs of one series share: the method and the config but for its seed and folder."""
    config = {k: v for k, v in flatten(run.config).items() if not _matches(k, SERIES_KEYS)}
    return {"method": run.method, "partitions": run.partitions, **config}


def group_series(runs: Sequence[ComparedRun]) -> list[Series]:
    """The runs grouped by setup, in the order each setup first appears; labels unique (#2 for a repeat)."""
    groups: list[tuple[dict[str, Any], list[ComparedRun]]] = []
    for run in runs:
        setup = _setup(run)
        members = next((m for s, m in groups if s == setup), None)
        if members is None:
            groups.append((setup, [run]))
        else:
            members.append(run)
    series: list[Series] = []
    for _, members in groups:
        seeds = ", ".join(str(run.seed) for run in members)
        label = members[0].label if len(members) == 1 else \
            f"{members[0].method_label} ({len(members)} seeds: {seeds})"
        unique, k = label, 1
        while unique in {s.label for s in series}:
            k += 1
            unique = f"{label} #{k}"
        series.append(Series(unique, members))
    return series


def seed_series(runs: Sequence[ComparedRun]) -> list[Series]:
    """The series of several seeds: those with a spread to show."""
    return [s for s in group_series(runs) if len(s.runs) > 1]


def config_differences(runs: Sequence[ComparedRun], ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> list[str]:
    """Config keys on which some series differs from the first, beyond those a comparison varies.

    Each series' seeds count as one value (their sorted list): the seeds within a series never differ, two
    series run at other seeds do.
    """
    def config(series: Series) -> dict[str, Any]:
        flat = flatten(series.runs[0].config)
        for key in SERIES_KEYS:
            if key in flat:
                flat[key] = sorted({flatten(run.config).get(key) for run in series.runs}, key=repr)
        return flat

    configs = [config(s) for s in group_series(runs)]
    first = configs[0]
    keys: list[str] = []
    for other in configs[1:]:
        for key in sorted(set(first) | set(other)):
            if not _matches(key, ignore) and first.get(key) != other.get(key) and key not in keys:
                keys.append(key)
    return keys


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n − 1) of n seeds' values; no mean below one value, no std below
    two. In a table row it is three columns, NAME_n, NAME_mean and NAME_std."""

    n: int
    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        """The spread of the values that are known (None: a seed that did not reach or evaluate it)."""
        known = [float(v) for v in values if v is not None]
        return cls(len(known), statistics.mean(known) if known else None,
                   statistics.stdev(known) if len(known) > 1 else None)

    @staticmethod
    def keys(name: str) -> list[str]:
        """The three column names of a spread called `name` in a table row."""
        return [f"{name}_n", f"{name}_mean", f"{name}_std"]

    def columns(self, name: str) -> dict[str, Any]:
        """The spread as a row's three columns."""
        return dict(zip(self.keys(name), (self.n, self.mean, self.std)))

    @classmethod
    def from_columns(cls, row: Mapping[str, Any], name: str) -> Spread:
        """The spread a row's three columns hold."""
        return cls(*(row[key] for key in cls.keys(name)))


def series_round_rows(series: Sequence[Series], controls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per series and round: the spread of the mask's sparsity over the seeds that have the round, and of the
    ticket's value and each control's over the seeds that evaluated them."""
    rows = []
    for s in series:
        for r in sorted({rec.round for run in s.runs for rec in run.rounds}):
            recs = [rec for run in s.runs for rec in run.rounds if rec.round == r]
            evaluated = [rec for rec in recs if rec.evaluated]
            row = {"series": s.label, "round": r, **Spread.of([rec.sparsity for rec in recs]).columns("sparsity"),
                   "metric": next((rec.metric for rec in evaluated), None),
                   **Spread.of([rec.value for rec in evaluated]).columns("value")}
            for name in controls:
                row.update(Spread.of([rec.controls.get(name) for rec in recs]).columns(name))
            rows.append(row)
    return rows


def series_rounds_to_sparsity(series: Sequence[Series], levels: Sequence[float]) -> list[dict[str, Any]]:
    """Per level and series: the spread of the first round at or above it over the seeds that reached it."""
    rows = []
    for level in levels:
        for s in series:
            reached = [rec.round for run in s.runs if (rec := run.round_reaching(level)) is not None]
            rows.append({"level": level, "series": s.label, "seeds": len(s.runs),
                         **Spread.of(reached).columns("rounds")})
    return rows


def series_rows(series: Sequence[Series]) -> list[dict[str, Any]]:
    """Which runs (and seeds) each series holds."""
    return [{"series": s.label, "method": s.method, "runs": [run.label for run in s.runs], "seeds": s.seeds}
            for s in series]

