from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.artifact import load_artifact
from pipeline.errors import ModelInputError
from pipeline.pyfunc import TerrasegPyfunc, predict_array, signature_for
from tests.mlflow_helpers import reference_softmax, sample_images, tiny_artifact


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> TerrasegPyfunc:
    folder = tmp_path_factory.mktemp("pyfunc") / "model"
    tiny_artifact(folder)
    model = TerrasegPyfunc()
    model.load(folder)
    return model


def test_batch_and_single_images_of_any_dtype(wrapper: TerrasegPyfunc) -> None:
    images = sample_images(count=2, size=48)
    expected = reference_softmax(wrapper.model, images)
    out = wrapper.predict(None, images)
    assert out["class_map"].shape == (2, 48, 48) and out["class_map"].dtype == np.uint8
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    single = wrapper.predict(None, images[1].astype(np.float64))
    assert single["probabilities"].shape == (5, 48, 48)
    np.testing.assert_allclose(single["probabilities"], expected[1], atol=1e-5)
    np.testing.assert_array_equal(
        wrapper.predict(None, images[0].astype(np.uint16))["class_map"], out["class_map"][0]
    )


def test_large_images_are_tiled(wrapper: TerrasegPyfunc) -> None:
    image = sample_images(count=1, size=100)[0, :, :, :90]  # 100 x 90 > one 64 px tile
    out = wrapper.predict(None, image)
    assert out["class_map"].shape == (100, 90)
    np.testing.assert_allclose(out["probabilities"].sum(axis=0), 1.0, atol=1e-5)
    whole = wrapper.predict(None, image, params={"tile_size": 128})
    assert (whole["class_map"] == out["class_map"]).mean() > 0.5  # same model, other context


def test_wrong_bands_or_dtype_are_refused(wrapper: TerrasegPyfunc) -> None:
    with pytest.raises(ModelInputError, match=r"\(4, rows, cols\).*red, green, blue, nir"):
        predict_array(wrapper.model, wrapper.artifact, np.zeros((3, 8, 8)), 64)
    with pytest.raises(ModelInputError, match="numeric"):
        predict_array(wrapper.model, wrapper.artifact, np.zeros((4, 8, 8), dtype="U1"), 64)


def test_signature_describes_input_and_outputs(tmp_path: Path) -> None:
    tiny_artifact(tmp_path / "model")
    signature = signature_for(load_artifact(tmp_path / "model"))
    (inputs,) = signature.inputs.inputs
    assert inputs.type == np.dtype("uint8") and inputs.shape == (-1, 4, -1, -1)
    assert signature.outputs.input_names() == ["class_map", "probabilities"]
    assert signature.params.params[0].name == "tile_size"
