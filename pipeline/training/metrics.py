"""Confusion matrices of training batches, on the device.

The metrics come from :mod:`terraseg.pipeline.metrics`.

Rows of the matrix are true classes, columns predicted classes. Matrices from
batches and processes are summed before any metric is computed, so every metric
is over all pixels at once (not a mean of per-batch or per-rank means).
"""

from __future__ import annotations

import torch
from torch import Tensor

from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.metrics import scores

__all__ = ["confusion_matrix", "scores"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts of labelled pixels; ``target == 255`` is skipped."""
    valid = target != IGNORE_LABEL
    index = target[valid] * num_classes + pred[valid]
    counts = torch.bincount(index.flatten(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)
