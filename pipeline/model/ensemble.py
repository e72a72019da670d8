"""Several DeepLabV3+ networks trained side by side, predicting the mean of their probabilities.

On small training sets one network's result depends on its initial weights: on the
dev set's Landsat task three seeds of the same recipe scored 0.47 to 0.54 mean IoU.
The mean of a few networks' class probabilities (a deep ensemble) is steadier and
better than its members on average.

The members differ in their initial weights and in the crops they train on: in training
mode the batch is split into one equal part per member (the trainer's loader draws
``batch_size`` crops for each), and the ensemble returns the members' logits for their
parts one after another, in the order of the batch, so that the trainer's loss is the
mean of the members' losses and each member learns on its own. In evaluation mode every
member sees the whole input and the ensemble returns the log of the mean of the members'
probabilities, so that a softmax of the output (what prediction applies) gives the mean
probabilities, and the argmax the ensemble's classes.
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
        """Logits (B, classes, H, W): in training, member i's for the i-th part of the batch.

        Args:
            x: The input tiles (B, bands, H, W); in training, B is a multiple of the
                number of members.
            logits_dtype: Passed to each member (see :meth:`DeepLabV3Plus.forward`).

        Raises:
            ValueError: In training, the batch does not split evenly over the members.
        """
        if self.training:
            if x.shape[0] % len(self.members):
                raise ValueError(
                    f"a training batch of {x.shape[0]} tiles does not split over "
                    f"{len(self.members)} members"
                )
            parts = x.chunk(len(self.members))
            pairs = zip(self.members, parts, strict=True)
            return torch.cat([member(part, logits_dtype=logits_dtype) for member, part in pairs])
        outputs = [member(x, logits_dtype=logits_dtype) for member in self.members]
        log_probabilities = torch.stack([o.float().log_softmax(dim=1) for o in outputs])
        mean = torch.logsumexp(log_probabilities, dim=0) - math.log(len(outputs))
        return mean.to(outputs[0].dtype)
