"""Several DeepLabV3+ networks trained side by side, predicting the mean of their probabilities.

On small training sets one network's result depends on its initial weights: on the
dev set's Landsat task three seeds of the same recipe scored 0.47 to 0.54 mean IoU.
The mean of a few networks' class probabilities (a deep ensemble) is steadier and
better than its members on average.

The members see the same batches and differ in their initial weights. In training mode
the ensemble returns the members' logits one after another along the batch axis, so
that the trainer's loss is the mean of the members' losses and each member learns on
its own; in evaluation mode it returns the log of the mean of the members'
probabilities, so that a softmax of the output (what prediction applies) gives the
mean probabilities, and the argmax the ensemble's classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from terraseg.pipeline.model.deeplab import DeepLabV3Plus


class Ensemble(nn.Module):
    """Networks of one architecture whose probabilities are averaged.

    Args:
        members: The networks (two or more), each mapping (B, bands, H, W) to
            logits (B, classes, H, W).
    """

    def __init__(self, members: Sequence[DeepLabV3Plus]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two members or more, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.in_channels = members[0].in_channels
        self.output_stride = members[0].output_stride

    def forward(self, x: Tensor, *, logits_dtype: torch.dtype | None = None) -> Tensor:
        """Training: (N x B, classes, H, W), member by member; evaluation: (B, classes, H, W).

        Args:
            x: The input tiles (B, bands, H, W).
            logits_dtype: Passed to each member (see :meth:`DeepLabV3Plus.forward`).
        """
        outputs = [member(x, logits_dtype=logits_dtype) for member in self.members]
        if self.training:
            return torch.cat(outputs, dim=0)
        log_probabilities = torch.stack([o.float().log_softmax(dim=1) for o in outputs])
        mean = torch.logsumexp(log_probabilities, dim=0) - math.log(len(outputs))
        return mean.to(outputs[0].dtype)


def member_targets(logits: Tensor, target: Tensor) -> Tensor:
    """``target`` (B, H, W) repeated for each member block of ``logits`` (N x B, C, H, W)."""
    repeats, left = divmod(logits.shape[0], target.shape[0])
    if left:
        raise ValueError(f"logits of {logits.shape[0]} tiles for {target.shape[0]} targets")
    return target if repeats == 1 else target.repeat(repeats, *[1] * (target.ndim - 1))
