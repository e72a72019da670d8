"""An array predicted in memory gets the pixels ``terraseg predict`` writes for its raster."""

import numpy as np
import pytest
import rasterio

from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.prediction.arrays import predict_array
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import open_model
from terraseg.pipeline.prediction.job import plan_files
from tests.helpers import tiny_model_artifact, tiny_scenes

CONFIG = PredictConfig(probabilities=True, probability_dtype="float32", block_size=96,
                       threads=1, precision="fp32")  # fmt: skip


def test_array_equals_the_file_driver(tmp_path):
    model = str(tiny_model_artifact(tmp_path / "model"))
    scene = tiny_scenes(tmp_path / "s", scenes=1, nodata="holes", size="300x211").scenes[0]
    artifact = open_model(model)
    jobs, _ = plan_files(model, artifact, [scene], tmp_path / "out", CONFIG)
    (outcome,) = predict_files(jobs, InProcessExecutor())
    with rasterio.open(scene) as src:
        image, nodata = src.read(), src.nodata
    result = predict_array(artifact, image, nodata=nodata, config=CONFIG)
    with rasterio.open(outcome.outputs[0]) as c, rasterio.open(outcome.outputs[1]) as p:
        np.testing.assert_array_equal(result.classes, c.read(1))
        np.testing.assert_array_equal(result.probabilities, p.read()[:-1])
    assert (result.classes == 255).any()  # the holes are nodata


def test_wrong_arrays_are_one_line(tmp_path):
    artifact = open_model(str(tiny_model_artifact(tmp_path / "model")))
    with pytest.raises(ModelInputError, match=r"shape \(4, rows, cols\).*got shape \(3, 8, 8\)"):
        predict_array(artifact, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ModelInputError, match="numeric"):
        predict_array(artifact, np.zeros((4, 8, 8), "U1"))
