"""Confusion-matrix metrics: per-class IoU, recall, precision and F1, mean IoU, pixel accuracy.

Rows of the matrix are true classes, columns predicted classes. Matrices from
blocks, batches and processes are summed before any metric is computed, so every
metric is over all pixels at once (not a mean of per-block or per-rank means).
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
