"""int8 calibration of a trained model on tiles of its training store."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from terraseg.pipeline.artifact import ModelArtifact
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.model.inference import inference_network
from terraseg.pipeline.model.quantization import calibrate, int8_supported
from terraseg.pipeline.training.dataset import StoreInfo, ValTiles, read_store_info

logger = logging.getLogger(__name__)

BATCH = 4  # tiles per calibration pass


def calibrate_on_store(model: nn.Module, info: StoreInfo, tiles: int) -> dict[str, Tensor] | None:
    """int8 activation ranges of ``model`` over ``tiles`` tiles of the store.

    The tiles are spread evenly over the validation tiles, or over the training
    tiles when the store has no validation split. Runs on CPU in float32.

    Args:
        model: The trained network in eval mode on CPU (``ModelArtifact.build_model``);
            it is rearranged for inference in place.
        info: The store.
        tiles: How many tiles to observe.

    Returns:
        The ranges (see :func:`terraseg.pipeline.model.quantization.calibrate`), or None when
        ``tiles`` is 0 or this torch cannot quantize for x86.
    """
    if not tiles or not int8_supported():
        return None
    source = info if info.val else dataclasses.replace(info, val=info.train)
    dataset = ValTiles(source)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(tiles, len(dataset))).round())
    network = inference_network(model, "cpu")

    def batches() -> Iterator[Tensor]:
        for start in range(0, len(picks), BATCH):
            yield torch.stack([dataset[int(i)][0] for i in picks[start : start + BATCH]])

    logger.info("calibrating int8 inference on %d tiles", len(picks))
    return calibrate(network, batches())


def calibrate_artifact(artifact: ModelArtifact, store: str, tiles: int) -> ModelArtifact:
    """``artifact`` with int8 calibration observed on ``tiles`` tiles of a training store.

    For a model trained without calibration; the store must have the model's bands.

    Raises:
        InputError: The store's bands differ from the model's, or this torch cannot
            quantize for x86.
    """
    info = read_store_info(store)
    if info.band_names != artifact.band_names:
        raise InputError(
            f"the store has bands {info.band_names}, the model was trained on "
            f"{artifact.band_names}",
            path=store,
        )
    calibration = calibrate_on_store(artifact.build_model(), info, max(1, tiles))
    if calibration is None:
        raise InputError("this torch has no x86 quantized engine to calibrate for", path=store)
    return dataclasses.replace(artifact, calibration=calibration)
