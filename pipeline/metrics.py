"""Metrics of class maps: confusion-matrix scores and boundary F-scores.

Rows of the matrix are true classes, columns predicted classes; per-class IoU,
recall, precision and F1, mean IoU and pixel accuracy come from it. Matrices from
blocks, batches and processes are summed before any metric is computed, so every
metric is over all pixels at once (not a mean of per-block or per-rank means).

The boundary F-score (Csurka et al. 2013; Perazzi et al. 2016) scores outlines: per
class, the precision and recall of predicted against true boundary pixels within a
tolerance of 1 or 2 pixels. Its counts are summed over blocks in the same way; a
block reads :data:`BOUNDARY_HALO` pixels of context around the pixels it counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import IGNORE_LABEL


def confusion_counts(
    pred: NDArray[Any], truth: NDArray[Any], num_classes: int
) -> NDArray[np.int64]:
    """(C, C) counts of pixels where both arrays hold a class (255 in either is skipped)."""
    valid = (
        (truth != IGNORE_LABEL)
        & (pred != IGNORE_LABEL)
        & (truth < num_classes)
        & (pred < num_classes)
    )
    index = truth[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores(matrix: NDArray[Any]) -> dict[str, Any]:
    """Metrics of a confusion matrix.

    A class that is neither present nor predicted has NaN IoU, accuracy and F1 and
    is left out of the means.

    Returns:
        ``iou``, ``accuracy`` (recall), ``precision`` and ``f1`` per class as lists;
        ``mean_iou``, ``mean_accuracy``, ``mean_f1`` and ``pixel_accuracy`` as floats.
    """
    cm = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(cm)
    true, predicted = cm.sum(axis=1), cm.sum(axis=0)
    iou = _ratio(tp, true + predicted - tp)
    accuracy = _ratio(tp, true)
    precision = _ratio(tp, predicted)
    f1 = _ratio(2 * tp, true + predicted)
    total = cm.sum()
    with np.errstate(all="ignore"):
        return {
            "iou": iou.tolist(),
            "accuracy": accuracy.tolist(),
            "precision": precision.tolist(),
            "f1": f1.tolist(),
            "mean_iou": _nanmean(iou),
            "mean_accuracy": _nanmean(accuracy),
            "mean_f1": _nanmean(f1),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        }


def _nanmean(values: NDArray[np.float64]) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


BOUNDARY_TOLERANCES = (1, 2)  # pixels; boundary F-score at each
BOUNDARY_HALO = max(BOUNDARY_TOLERANCES) + 1  # context a block needs beyond its interior


def boundary_pixels(labels: NDArray[Any], cls: int, valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Valid pixels of class ``cls`` with a valid 4-neighbour of another class.

    The raster's edge and invalid neighbours make no boundary, so a class that meets
    only unlabelled ground has none there.
    """
    inside = (labels == cls) & valid
    edge = np.zeros_like(inside)
    for axis in (0, 1):
        differs = (labels != np.roll(labels, 1, axis)) & valid & np.roll(valid, 1, axis)
        first = [slice(None)] * 2
        first[axis] = slice(0, 1)
        differs[tuple(first)] = False  # np.roll wrapped the last row or column round
        edge |= differs | np.roll(differs, -1, axis)  # both sides of each differing pair
    result: NDArray[np.bool_] = inside & edge
    return result


def boundary_counts(
    pred: NDArray[Any],
    truth: NDArray[Any],
    num_classes: int,
    interior: tuple[slice, slice] | None = None,
) -> NDArray[np.int64]:
    """Counts of the boundary F-score per tolerance and class, additive over blocks.

    A predicted boundary pixel is matched when a true boundary pixel of the same class
    lies within the tolerance (Euclidean distance), and the reverse. Pixels where
    either array holds 255 or an index outside the classes are ignored.

    Args:
        pred: Predicted class indices (rows, cols).
        truth: True class indices (rows, cols), 255 where unlabelled.
        num_classes: Number of classes.
        interior: The part of the arrays whose pixels are counted; the rest is
            context (at least :data:`BOUNDARY_HALO` pixels wide where a block has
            neighbours). Default: everything.

    Returns:
        (tolerances, classes, 4) int64: matched predicted, predicted, matched true,
        true boundary pixels.
    """
    from scipy.ndimage import distance_transform_edt

    valid = (truth < num_classes) & (pred < num_classes)
    window = interior or (slice(None), slice(None))
    out = np.zeros((len(BOUNDARY_TOLERANCES), num_classes, 4), np.int64)
    for cls in range(num_classes):
        found, true = boundary_pixels(pred, cls, valid), boundary_pixels(truth, cls, valid)
        if not (found[window].any() or true[window].any()):
            continue
        to_true = distance_transform_edt(~true) if true.any() else np.full(true.shape, np.inf)
        to_found = distance_transform_edt(~found) if found.any() else np.full(true.shape, np.inf)
        for t, tolerance in enumerate(BOUNDARY_TOLERANCES):
            out[t, cls] = (
                (found & (to_true <= tolerance))[window].sum(),
                found[window].sum(),
                (true & (to_found <= tolerance))[window].sum(),
                true[window].sum(),
            )
    return out


def boundary_scores(counts: NDArray[Any]) -> dict[str, Any]:
    """Boundary F-scores from summed :func:`boundary_counts`.

    Precision is the share of predicted boundary pixels near a true one, recall the
    share of true boundary pixels near a predicted one, F their harmonic mean. A
    class with no boundary in either map has NaN F and is left out of the mean; one
    with boundaries in only one of them scores 0.

    Returns:
        Per tolerance ``t`` (1, 2): ``boundary_f{t}`` per class as a list and
        ``mean_boundary_f{t}`` as a float.
    """
    c = np.asarray(counts, dtype=np.float64)
    result: dict[str, Any] = {}
    for t, tolerance in enumerate(BOUNDARY_TOLERANCES):
        matched_pred, pred, matched_true, true = (c[t, :, k] for k in range(4))
        precision = np.where(pred > 0, matched_pred / np.maximum(pred, 1), 0.0)
        recall = np.where(true > 0, matched_true / np.maximum(true, 1), 0.0)
        total = precision + recall
        f = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
        f = np.where((pred > 0) | (true > 0), f, np.nan)
        result[f"boundary_f{tolerance}"] = f.tolist()
        result[f"mean_boundary_f{tolerance}"] = _nanmean(f)
    return result
