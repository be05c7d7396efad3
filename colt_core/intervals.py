"""A seeded percentile bootstrap over the items of a test set (`Bootstrap`): how sure a headline metric is.

A resample draws the test set's n items n times with replacement; a task computes its metric on each resample
from the items' multiplicities (`counts`, how many times each item was drawn), so its per-item work (matching
boxes, comparing labels) is done once. The interval is the percentile interval of the resampled metric, as
`scipy.stats.bootstrap(..., method="percentile", batch=1)` computes it with the same generator: the b-th
resample is the b-th call `rng.integers(0, n, size=n)` of `numpy.random.default_rng(seed)`, and the bounds are
the linearly interpolated quantiles (1 - confidence) / 2 and (1 + confidence) / 2 of the resampled values.
Same seed, same interval, bit for bit.

A foundation module: the tasks compute intervals with it, the run records and reports only carry them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Bootstrap:
    """The percentile bootstrap of a metric over `resamples` resamples of a test set's items, from `seed`."""

    seed: int
    resamples: int = RESAMPLES
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        if self.resamples < 1 or not 0.0 < self.confidence < 1.0:
            raise ValueError(f"a bootstrap needs resamples >= 1 and 0 < confidence < 1, got {self.resamples} "
                             f"and {self.confidence}")

    def method(self, items: str = "test images") -> str:
        """How the interval was made, in words for a record: "bootstrap, 1000 resamples of test images, 95%
        percentile"."""
        return f"bootstrap, {self.resamples} resamples of {items}, {100 * self.confidence:g}% percentile"

    def counts(self, n: int) -> Iterator[np.ndarray]:
        """Per resample, how many times each of `n` items is drawn (an int64 array of length n, summing to n)."""
        if n < 1:
            raise ValueError("a bootstrap needs at least one item to resample")
        rng = np.random.default_rng(self.seed)
        for _ in range(self.resamples):
            yield np.bincount(rng.integers(0, n, size=n), minlength=n)

    def interval(self, statistic: Callable[[np.ndarray], float], n: int) -> list[float] | None:
        """[lo, hi] of `statistic` (a metric of the items' multiplicities) over the resamples of `n` items."""
        return self.intervals(lambda counts: (statistic(counts),), n)[0]

    def intervals(self, statistics: Callable[[np.ndarray], Sequence[float]], n: int) -> list[list[float] | None]:
        """[lo, hi] of each of several metrics computed together on each resample (e.g. AP and AP50)."""
        values = np.array([statistics(counts) for counts in self.counts(n)], dtype=np.float64)
        return [percentile_interval(column, self.confidence) for column in values.T]

    def mean_interval(self, values: Sequence[float] | np.ndarray) -> list[float] | None:
        """[lo, hi] of the mean of per-item values (e.g. 1.0 for a correctly classified image, else 0.0)."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        return self.interval(lambda counts: float(np.sum(counts * x)) / len(x), len(x))


def percentile_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """[lo, hi]: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of `values` (linear interpolation).

    NaN values (a resample on which the metric is undefined, e.g. one holding no ground truth at all) are
    left out; None when no value is left.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]
