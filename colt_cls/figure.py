"""The classification report's figure: the confusion matrices of the dense model and the final ticket side by
side, each row divided by its class's test images, so a reader sees which classes a ticket confuses.

At evaluation the task keeps the test set's confusion matrix (`confusion_preview`, beside the evaluation's
metrics); the report draws the figure from those files, so a resumed run redraws it the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from colt_core.report.figure import png_bytes
from colt_core.report.plots import pyplot

TICK_LABEL_LIMIT = 20  # more classes than this: no class names on the axes (they would not be legible)
VALUE_LIMIT = 10  # this many classes or fewer: each cell also shows its share in %


def confusion_preview(class_names: Sequence[str], confusion: Sequence[Sequence[int]]) -> dict[str, Any]:
    """What the figure needs of one evaluation, as plain data: the class names and the confusion matrix,
    `confusion[true][predicted]` test images."""
    return {"classes": list(class_names), "confusion": [[int(v) for v in row] for row in confusion]}


def row_normalised(confusion: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum (the class's test images); a class without test images
    keeps a row of zeros."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_figure(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """A matplotlib figure of one row-normalised confusion matrix per `(title, preview)`: true classes down,
    predicted classes across, one colour scale, class names on the axes up to `TICK_LABEL_LIMIT` classes."""
    plt = pyplot()
    classes = list(columns[0][1]["classes"])
    n = len(classes)
    named = n <= TICK_LABEL_LIMIT
    side = 4.0 + (0.25 * n if named else 0.0)
    fig, axes = plt.subplots(1, len(columns), figsize=(side * len(columns) + 1.2, side), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (title, preview) in zip(axes[0], columns, strict=True):
        shares = row_normalised(preview["confusion"])
        image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="Blues", interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if named:
            ax.set_xticks(range(n), classes, rotation=90)
            ax.set_yticks(range(n), classes)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if n <= VALUE_LIMIT:
            for (i, j), share in np.ndenumerate(shares):
                ax.text(j, i, f"{100 * share:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if share > 0.5 else "black")
    fig.colorbar(image, ax=axes[0].tolist(), label="share of the true class's test images", shrink=0.8)
    return fig


def draw_confusion_figure(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """`confusion_figure` as PNG bytes; the same previews give the same bytes."""
    return png_bytes(confusion_figure(columns))
