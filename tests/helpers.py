"""Test data generated in code: tiny synthetic scenes from `terraseg synth`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.settings import build_config
from terraseg.pipeline.synth.config import SynthConfig
from terraseg.pipeline.synth.writer import SynthOutputs, synthesize

TINY = {"scenes": 2, "size": "256x192", "seed": 11, "resolution": 2.0, "workers": 1}


def tiny_scenes(out: Path, **changes: Any) -> SynthOutputs:
    """Two 256 x 192 scenes at 2 m (one generation cell each)."""
    return synthesize(build_config(SynthConfig, {**TINY, **changes}), out)


def calibration_tiles(count: int, size: int, seed: int = 0) -> NDArray[np.float32]:
    """``count`` smooth normalized 4-band tiles (count, 4, size, size), like imagery's."""
    import torch

    coarse = torch.randn(count, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    tiles = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return tiles.numpy()


def tiny_model_artifact(
    folder: Path, *, tile: int = 64, sharpen: float = 40.0, seed: int = 0, calibrated: bool = False
) -> Path:
    """An untrained DeepLabV3+ (MobileNetV2, width 1/4) for 4-band uint8 rasters.

    The classifier weights are scaled by ``sharpen`` so that probabilities vary
    visibly across the image, as a trained model's do. ``calibrated`` stores int8
    activation ranges observed on :func:`calibration_tiles`.
    """
    import torch

    from terraseg.pipeline.artifact import ModelArtifact, Normalization, save_artifact
    from terraseg.pipeline.classes import default_class_table
    from terraseg.pipeline.model.config import ModelConfig
    from terraseg.pipeline.model.deeplab import build_model

    config = ModelConfig(
        backbone="mobilenetv2", in_channels=4, num_classes=5, width_multiplier=0.25
    )
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(sharpen)
    artifact = ModelArtifact(
        model_config=config.model_dump(mode="json"),
        band_names=["red", "green", "blue", "nir"],
        normalization=Normalization([100.0] * 4, [50.0] * 4),
        classes=default_class_table(),
        tile_size=tile,
        state_dict=model.state_dict(),
    )
    if calibrated:
        from terraseg.pipeline.model.inference import inference_network
        from terraseg.pipeline.model.quantization import calibrate

        tiles = torch.from_numpy(calibration_tiles(4, tile, seed=seed))
        artifact.calibration = calibrate(inference_network(artifact.build_model(), "cpu"), [tiles])
    return save_artifact(artifact, folder)
