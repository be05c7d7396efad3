"""Bootstrap intervals of detection AP: Pascal VOC mAP (voc07, voc12), COCO-style AP@[.5:.95] and AP50.

Each detection is matched within its own image, once: by `colt_det.voc_eval.match_class`, or by COCOeval's
`evaluate()` (its `evalImgs`). A resample of the test images counts image i `counts[i]` times; its AP is the
AP of the image set written out with the copies, each copy an image of its own, and each detection followed
in the ranking by its copies (among detections of equal score, those of one image keep their order, each
followed by its copies). Only the counting changes, so the AP is recomputed from the stored matches:

* Precision changes only at a true positive, so the curve that AP reads is fixed by the true positives in
  rank order, each with the true positives up to its last copy and the false positives ranked before it
  (`RankedOutcomes.runs`): one cumulative sum over the detections and a few over the true positives.
* Its AP is the one `voc_ap` or COCOeval's `accumulate()` computes on the written-out set, to the last bit:
  the same precisions and recalls, the same envelope values at the same recall points, and (VOC2010+) the
  same area terms summed the same way. With every count 1 it is the reported AP itself, of any image set;
  on a resample it is `eval_class`'s AP on the written-out records and detections, and COCOeval's whenever
  no two detections of one image and category tie in score (COCOeval ranks an image's tied detections
  before their copies).

`evaluate_voc_metrics` and the `bootstrap` argument of `colt_det.coco_eval`'s evaluations add the intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

from colt_core.intervals import Bootstrap
from colt_det.data import Detection, ImageRecord
from colt_det.voc import VOC_CLASSES
from colt_det.voc_eval import ELEVEN_POINT_RECALLS, ClassMatches, match_voc, mean_ap, voc_result

MAX_DETECTIONS = 100  # per image, as COCOeval's headline AP


@dataclass(frozen=True)
class RankedOutcomes:
    """Rows of ranked detections, all counted at once: VOC has a row per class, COCO one per category and IoU
    threshold. Each row ranks the detections of one list (a class's, a category's) and says which are true
    positives and which are ignored; the others are false positives.

    `images` holds every list's detections, list after list (the image of each); `tp` every row's true
    positives (indices into `images`), row after row in rank order, with `row` and `column` saying where each
    one is and the other per-true-positive arrays where its list, its row and its row's ignored detections
    begin (`ignored_before`: the first of them ranked after it).
    """

    images: np.ndarray
    rows: int
    width: int  # of a row padded to hold all its true positives and one more cell
    tp: np.ndarray
    row: np.ndarray
    column: np.ndarray
    list_start: np.ndarray
    tp_start: np.ndarray
    ignored: np.ndarray
    ignored_start: np.ndarray
    ignored_before: np.ndarray

    @classmethod
    def of(cls, lists: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> RankedOutcomes:
        """From each list's (images of its ranked detections, true-positive flags, ignored flags), the flags
        (rows, detections) or, for a list of one row, (detections,)."""
        images, tps, igs, starts = [], [], [], []
        offset = 0
        for list_images, true_positive, ignored in lists:
            images.append(np.asarray(list_images, dtype=np.int64))
            for tp_flags, ignored_flags in zip(np.atleast_2d(true_positive), np.atleast_2d(ignored), strict=True):
                tps.append(offset + np.flatnonzero(tp_flags))
                igs.append(offset + np.flatnonzero(ignored_flags))
                starts.append(offset)
            offset += len(images[-1])
        tp_lengths = np.array([len(t) for t in tps], dtype=np.int64)
        ig_lengths = np.array([len(i) for i in igs], dtype=np.int64)
        row = np.repeat(np.arange(len(tps)), tp_lengths)
        tp_starts, ig_starts = np.cumsum(tp_lengths) - tp_lengths, np.cumsum(ig_lengths) - ig_lengths
        empty = np.zeros(0, dtype=np.int64)
        before = [start + np.searchsorted(ig, tp) for start, ig, tp in zip(ig_starts, igs, tps, strict=True)]
        return cls(images=np.concatenate([empty, *images]), rows=len(tps),
                   width=int(tp_lengths.max(initial=0)) + 1, tp=np.concatenate([empty, *tps]), row=row,
                   column=np.arange(len(row)) - tp_starts[row], list_start=np.array(starts, dtype=np.int64)[row],
                   tp_start=tp_starts[row], ignored=np.concatenate([empty, *igs]), ignored_start=ig_starts[row],
                   ignored_before=np.concatenate([empty, *before]))

    def runs(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per true positive, on the resample `counts` (image i counted counts[i] times): its copies, the true
        positives of its row up to its last copy, and the false positives of its row ranked before it."""
        copies = counts[self.images]
        ranked = np.concatenate(([0], np.cumsum(copies)))  # detections (with copies) before each one
        tp_copies = copies[self.tp]
        tp_total = np.cumsum(tp_copies)
        tp = tp_total - np.concatenate(([0], tp_total))[self.tp_start]
        ignored = np.concatenate(([0], np.cumsum(copies[self.ignored])))
        ignored_before = ignored[self.ignored_before] - ignored[self.ignored_start]
        return tp_copies, tp, (ranked[self.tp] - ranked[self.list_start]) - (tp - tp_copies) - ignored_before

    def envelope(self, precision: np.ndarray) -> np.ndarray:
        """(rows, width): at each true positive, the best of its row's precisions at it and after it (0 in the
        padding)."""
        padded = np.zeros((self.rows, self.width))
        padded[self.row, self.column] = precision
        return np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1]

    def first_reaching(self, tp: np.ndarray, needed: np.ndarray) -> np.ndarray:
        """(rows, k) positions in a (rows, width) array: per row, the first true positive whose count `tp` is at
        least each of `needed` (rows, k), or the row's padding where none is. One search over the rows side by
        side, each row's counts offset past the previous row's."""
        big = int(max(tp.max(initial=0), needed.max(initial=0))) + 2
        counts = np.full((self.rows, self.width), big - 1, dtype=np.int64)
        counts[self.row, self.column] = tp
        offset = big * np.arange(self.rows)[:, None]
        return np.searchsorted((counts + offset).ravel(), (needed + offset).ravel(), side="left").reshape(
            needed.shape)


def first_counts(positives: np.ndarray, recalls: np.ndarray) -> np.ndarray:
    """(rows, recalls): the smallest count k with k / positives >= recall in floating point, the recall a curve
    reaches at its k-th true positive (`positives` > 0, as floats)."""
    n = np.asarray(positives, dtype=np.float64)[:, None]
    k = np.ceil(recalls[None, :] * n)  # within one of the answer
    k = np.where((k > 0) & ((k - 1) / n >= recalls), k - 1, k)
    k = np.where(k / n < recalls, k + 1, k)
    return k.astype(np.int64)


# ----- Pascal VOC ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocMatches:
    """Every class's VOC matches (a row each), ready to be re-counted over resamples of the images."""

    names: Sequence[str]
    outcomes: RankedOutcomes
    positives: np.ndarray  # (classes, images): non-difficult boxes

    @classmethod
    def of(cls, matches: Mapping[str, ClassMatches]) -> VocMatches:
        return cls(names=list(matches),
                   outcomes=RankedOutcomes.of([(m.images, m.tp > 0, (m.tp == 0) & (m.fp == 0))
                                               for m in matches.values()]),
                   positives=np.array([m.positives for m in matches.values()], dtype=np.int64))

    @property
    def images(self) -> int:
        return self.positives.shape[1]

    def aps(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per class, (VOC2007 11-point AP, VOC2010+ AP) on the resample `counts` (every image once when None),
        as `voc_ap` computes them on it; NaN without non-difficult ground truth there."""
        counts = np.ones(self.images, dtype=np.int64) if counts is None else counts
        o = self.outcomes
        npos = self.positives @ counts
        n = np.where(npos > 0, npos, 1).astype(np.float64)
        copies, tp, fp = o.runs(counts)
        tp_float = tp.astype(np.float64)
        precision = tp_float / np.maximum(tp_float + fp, np.finfo(np.float64).eps)
        envelope = o.envelope(np.where(copies > 0, precision, 0.0))  # a true positive not drawn counts for nothing
        # 11-point: the best precision from the first true positive that reaches each recall.
        best = envelope.ravel()[o.first_reaching(tp, first_counts(n, ELEVEN_POINT_RECALLS))]
        ap07 = np.zeros(o.rows)
        for j in range(len(ELEVEN_POINT_RECALLS)):
            ap07 += best[:, j] / 11.0
        # Area: recall rises at every copy of a true positive, by k/n - (k-1)/n at its k-th, where the envelope
        # is its run's; each row's terms are summed as `voc_ap` sums them, with its last, zero term up to
        # recall 1 (an empty slot after the row's terms) unless the row reaches recall 1.
        rises = np.repeat(o.row, copies)
        per_row = np.bincount(rises, minlength=o.rows)
        start = np.cumsum(per_row) - per_row
        k = np.arange(len(rises)) - start[rises] + 1
        terms = np.zeros(len(rises) + o.rows)
        terms[np.arange(len(rises)) + rises] = (k / n[rises] - (k - 1) / n[rises]) * np.repeat(
            envelope[o.row, o.column], copies)
        ends = start + np.arange(o.rows) + per_row + (per_row != npos)
        ap12 = np.array([np.sum(terms[a:b]) for a, b in zip(start + np.arange(o.rows), ends, strict=True)])
        undefined = npos == 0
        ap07[undefined], ap12[undefined] = math.nan, math.nan
        return ap07, ap12

    def maps(self, counts: np.ndarray | None = None) -> tuple[float, float]:
        """(voc07 mAP, voc12 mAP) on the resample `counts` (every image once when None)."""
        ap07, ap12 = self.aps(counts)
        return (mean_ap(dict(zip(self.names, ap07.tolist(), strict=True))),
                mean_ap(dict(zip(self.names, ap12.tolist(), strict=True))))


def evaluate_voc_metrics(
    detections_by_class: Mapping[str, Sequence[Detection]],
    records: Sequence[ImageRecord],
    *,
    classes: Sequence[str] = VOC_CLASSES,
    bootstrap: Bootstrap | None = None,
) -> dict[str, dict]:
    """{"voc07": ..., "voc12": ...} as `evaluate_voc` gives them, from one matching of the detections; with
    `bootstrap`, each with "interval": [lo, hi] of its mAP over resamples of the records."""
    matches = match_voc(detections_by_class, records, classes)
    results = {metric: voc_result(matches, use_07_metric=metric == "voc07") for metric in ("voc07", "voc12")}
    if bootstrap is not None:
        intervals = [None, None]
        if records and matches:
            intervals = bootstrap.intervals(VocMatches.of(matches).maps, len(records))
        for result, interval in zip(results.values(), intervals, strict=True):
            result["interval"] = interval
    return results


# ----- COCO ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CocoMatches:
    """COCOeval's per-image matches of every category (a row per category and IoU threshold), ready to be
    re-accumulated over resamples of the images."""

    outcomes: RankedOutcomes
    positives: np.ndarray  # (categories, images): ground truth boxes that count (not crowd or ignored)
    thresholds: int
    recall_thresholds: np.ndarray
    at50: int  # the index of IoU 0.5 among the thresholds

    @classmethod
    def from_evaluator(cls, evaluator: COCOeval) -> CocoMatches:
        """The matches of an evaluator that has run `evaluate()` (bbox, default area ranges and detections)."""
        p = evaluator.params
        if p.maxDets[-1] != MAX_DETECTIONS or "all" not in p.areaRngLbl:
            raise ValueError(f"COCOeval params maxDets {p.maxDets} and areas {p.areaRngLbl}: expected the "
                             f"defaults, whose last maxDets is {MAX_DETECTIONS} and which have area 'all'")
        images, areas, thresholds = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
        area = p.areaRngLbl.index("all")
        positives = np.zeros((len(p.catIds), images), dtype=np.int64)
        lists = []
        for k in range(len(p.catIds)):
            entries = [(i, e) for i in range(images)
                       if (e := evaluator.evalImgs[(k * areas + area) * images + i]) is not None]
            for i, e in entries:
                positives[k, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            lists.append(_ranked(entries, thresholds))
        return cls(outcomes=RankedOutcomes.of(lists), positives=positives, thresholds=thresholds,
                   recall_thresholds=np.asarray(p.recThrs, dtype=np.float64),
                   at50=int(np.argmin(np.abs(p.iouThrs - 0.5))))

    @property
    def images(self) -> int:
        return self.positives.shape[1]

    def ap(self, counts: np.ndarray | None = None) -> tuple[float, float]:
        """(AP@[.5:.95], AP50): their means over the categories with ground truth, on the resample `counts`
        (every image once when None), taken as `colt_det.coco_eval` takes them of COCOeval's precision."""
        counts = np.ones(self.images, dtype=np.int64) if counts is None else counts
        o = self.outcomes
        npig = self.positives @ counts
        copies, tp, fp = o.runs(counts)
        tp_float = tp.astype(np.float64)
        precision = tp_float / (fp + tp_float + np.spacing(1))
        envelope = o.envelope(np.where(copies > 0, precision, 0.0))  # a true positive not drawn counts for nothing
        needed = np.repeat(first_counts(np.where(npig > 0, npig, 1), self.recall_thresholds), self.thresholds, axis=0)
        # accumulate()'s precision (categories, IoU thresholds, recall thresholds): the best precision from the
        # first true positive that reaches each recall threshold, 0 where none does.
        q = envelope.ravel()[o.first_reaching(tp, needed)]
        q = q.reshape(len(npig), self.thresholds, len(self.recall_thresholds))
        ap, ap50 = q.reshape(len(npig), -1).mean(axis=1), q[:, self.at50].mean(axis=1)
        ap[npig == 0], ap50[npig == 0] = math.nan, math.nan  # COCOeval's -1: no ground truth
        return mean_ap(dict(enumerate(ap.tolist()))), mean_ap(dict(enumerate(ap50.tolist())))

    def intervals(self, bootstrap: Bootstrap) -> dict[str, list[float] | None]:
        """{"interval": [lo, hi] of AP@[.5:.95], "AP50_interval": [lo, hi] of AP50} over resamples of the images."""
        if not self.images or not len(self.positives):
            return {"interval": None, "AP50_interval": None}
        ap, ap50 = bootstrap.intervals(self.ap, self.images)
        return {"interval": ap, "AP50_interval": ap50}


def _ranked(entries: Sequence[tuple[int, dict]], thresholds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One category's `evalImgs` entries (image index, entry) ranked as `accumulate()` ranks them: the image of
    each detection, and (thresholds, detections) flags of true positives and of ignored detections."""
    kept = [(i, np.asarray(e["dtScores"][:MAX_DETECTIONS], dtype=np.float64), e["dtMatches"][:, :MAX_DETECTIONS],
             e["dtIgnore"][:, :MAX_DETECTIONS]) for i, e in entries]
    scores = np.concatenate([np.zeros(0), *(s for _, s, _, _ in kept)])
    image = np.concatenate([np.zeros(0, np.int64), *(np.full(len(s), i, np.int64) for i, s, _, _ in kept)])
    matched = np.concatenate([np.zeros((thresholds, 0)), *(m for _, _, m, _ in kept)], axis=1) != 0
    ignored = np.concatenate([np.zeros((thresholds, 0)), *(g for _, _, _, g in kept)], axis=1).astype(bool)
    ranked = np.argsort(-scores, kind="mergesort")  # as accumulate()
    return image[ranked], matched[:, ranked] & ~ignored[:, ranked], ignored[:, ranked]


def coco_intervals(evaluator: COCOeval, bootstrap: Bootstrap) -> dict[str, list[float] | None]:
    """The bootstrap intervals of an evaluated COCOeval's AP@[.5:.95] ("interval") and AP50 ("AP50_interval")."""
    return CocoMatches.from_evaluator(evaluator).intervals(bootstrap)
