"""A trained network rearranged for inference: the same function, faster kernels."""

from __future__ import annotations

from torch import nn

from terraseg.pipeline.model.fusion import fuse_batch_norms
from terraseg.pipeline.model.padding import pad_wide_depthwise


def inference_network(model: nn.Module, device: str) -> nn.Module:
    """Fold batch norms into convolutions and, on CPU, pad wide depthwise convs explicitly.

    The model must be in eval mode; it is changed in place and returned. Prediction
    and int8 calibration both start from this network, so that the calibration's
    observers match the layers prediction quantizes.
    """
    model = fuse_batch_norms(model)
    if device == "cpu":
        model = pad_wide_depthwise(model)  # oneDNN's slow path for wide padding
    return model
