"""Segmentation losses: cross-entropy over labelled pixels, class weights, soft Dice.

Pixels labelled 255 (nodata, unlabelled) contribute neither loss nor gradient.
The cross-entropy is returned as a sum and a normalizer so that a distributed run
can divide by the normalizer summed over all processes: the mean is then over
the global batch, whatever share of ignored pixels each process holds.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import Tensor, nn

from terraseg.pipeline.classes import IGNORE_LABEL


def class_weights(
    counts: NDArray[np.int64], kind: Literal["none", "inverse", "inverse_sqrt"]
) -> NDArray[np.float64] | None:
    """Per-class weights from labelled-pixel counts per class, mean pixel weight 1.

    Args:
        counts: (tiles, classes) or (classes,) labelled-pixel counts.
        kind: ``inverse`` (1/f), ``inverse_sqrt`` (1/sqrt f) or ``none``.

    Returns:
        The weights, or None for ``none``. Absent classes get weight 1.
    """
    if kind == "none":
        return None
    totals = np.asarray(counts, dtype=np.float64).reshape(-1, counts.shape[-1]).sum(axis=0)
    freq = totals / max(1.0, totals.sum())
    power = 1.0 if kind == "inverse" else 0.5
    weights = np.where(freq > 0, np.power(np.maximum(freq, 1e-12), -power), 0.0)
    weights = weights / max(1e-12, float((weights * freq).sum()))  # labelled pixels average 1
    return np.where(freq > 0, weights, 1.0)


class SegmentationLoss(nn.Module):
    """Cross-entropy with the ignore label, optional class weights and a soft Dice term.

    Args:
        num_classes: Number of classes C.
        weights: Optional per-class weights (C,).
        dice_weight: Weight of ``1 - mean soft Dice`` added to the cross-entropy.
    """

    def __init__(
        self, num_classes: int, weights: NDArray[np.float64] | None = None, dice_weight: float = 0
    ) -> None:
        super().__init__()
        self.num_classes, self.dice_weight = num_classes, dice_weight
        tensor = torch.ones(num_classes) if weights is None else torch.as_tensor(weights)
        self.weight: Tensor
        self.register_buffer("weight", tensor.float(), persistent=False)
        self.weighted = weights is not None

    def cross_entropy_sum(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Summed (weighted) cross-entropy of labelled pixels and its normalizer.

        Args:
            logits: (B, C, H, W).
            target: (B, H, W) int64, 255 = ignore.

        Returns:
            ``(sum, normalizer)``: the mean is ``sum / normalizer``; the normalizer is
            the labelled-pixel count (weighted by class when weights are used).
        """
        weight = self.weight if self.weighted else None
        losses = F.cross_entropy(
            logits.float(), target, weight=weight, ignore_index=IGNORE_LABEL, reduction="none"
        )  # (B, H, W), 0 at ignored pixels
        valid = target != IGNORE_LABEL
        norm = self.weight[torch.where(valid, target, 0)][valid].sum()
        return losses.sum(), norm.detach()

    def dice(self, logits: Tensor, target: Tensor) -> Tensor:
        """``1 - mean over classes of the soft Dice`` of labelled pixels."""
        valid = (target != IGNORE_LABEL).unsqueeze(1)  # (B, 1, H, W)
        probs = logits.float().softmax(dim=1) * valid
        onehot = F.one_hot(torch.where(valid[:, 0], target, 0), self.num_classes)
        onehot = onehot.permute(0, 3, 1, 2) * valid  # (B, C, H, W)
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        cardinality = (probs + onehot).sum(dim=(0, 2, 3))
        return 1.0 - ((2 * inter + 1.0) / (cardinality + 1.0)).mean()

    def forward(self, logits: Tensor, target: Tensor, normalizer: Tensor | None = None) -> Tensor:
        """The loss; ``normalizer`` overrides the local one (global count in DDP)."""
        total, local = self.cross_entropy_sum(logits, target)
        loss = total / torch.clamp(local if normalizer is None else normalizer, min=1.0)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss
