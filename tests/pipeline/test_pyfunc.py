from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.prediction.arrays import predict_array as predict_image
from terraseg.pipeline.pyfunc import (
    PYFUNC_CONFIG,
    TerrasegPyfunc,
    accepted_dtypes,
    input_description,
    predict_array,
    signature_for,
)
from tests.mlflow_helpers import reference_softmax, sample_images, tiny_artifact


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> TerrasegPyfunc:
    folder = tmp_path_factory.mktemp("pyfunc") / "model"
    tiny_artifact(folder)
    model = TerrasegPyfunc()
    model.load(folder)
    return model


def test_batch_and_single_images_of_any_dtype(wrapper: TerrasegPyfunc) -> None:
    images = sample_images(count=2, size=64)  # one tile each: the model's own softmax
    model = wrapper.artifact.build_model()
    expected = reference_softmax(model, images)
    out = wrapper.predict(None, images)
    assert out["class_map"].shape == (2, 64, 64) and out["class_map"].dtype == np.uint8
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    single = wrapper.predict(None, images[1].astype(np.float32))  # the other accepted dtype
    assert single["probabilities"].shape == (5, 64, 64)
    np.testing.assert_allclose(single["probabilities"], expected[1], atol=1e-5)
    # predict_array, for Python callers, takes any numeric dtype
    class_map, _ = predict_array(wrapper.artifact, images[0].astype(np.uint16))
    np.testing.assert_array_equal(class_map, out["class_map"][0])


def test_any_size_is_predicted_as_terraseg_predict_does(wrapper: TerrasegPyfunc) -> None:
    image = sample_images(count=1, size=100)[0, :, :, :90]  # 100 x 90: several 64 px tiles
    out = wrapper.predict(None, image)
    assert out["class_map"].shape == (100, 90)
    expected = predict_image(wrapper.artifact, image, config=PYFUNC_CONFIG)
    np.testing.assert_array_equal(out["probabilities"], expected.probabilities)
    np.testing.assert_array_equal(out["class_map"], expected.classes)
    np.testing.assert_allclose(out["probabilities"].sum(axis=0), 1.0, atol=1e-5)


def test_the_pyfunc_takes_the_training_dtype_or_float32(wrapper: TerrasegPyfunc) -> None:
    assert accepted_dtypes(wrapper.artifact) == ["uint8", "float32"]
    image = sample_images(count=1)[0]
    within = wrapper.predict(None, image.astype(np.uint16))  # integers uint8 holds: cast
    np.testing.assert_array_equal(within["class_map"], wrapper.predict(None, image)["class_map"])
    beyond = np.full((4, 8, 8), 300, np.uint16)
    with pytest.raises(ModelInputError, match=r"values from 300 to 300: convert with \.astype"):
        wrapper.predict(None, beyond)
    with pytest.raises(ModelInputError, match="expected a numpy array, got list"):
        wrapper.predict(None, [[0]])  # type: ignore[arg-type]


def test_wrong_bands_or_dtype_are_refused(wrapper: TerrasegPyfunc) -> None:
    with pytest.raises(ModelInputError, match=r"\(4, rows, cols\).*red, green, blue, nir"):
        predict_array(wrapper.artifact, np.zeros((3, 8, 8)))
    with pytest.raises(ModelInputError, match="numeric"):
        predict_array(wrapper.artifact, np.zeros((4, 8, 8), dtype="U1"))
    with pytest.raises(ModelInputError, match=r"got shape \(8, 8\)"):
        predict_array(wrapper.artifact, np.zeros((8, 8)))


def test_signature_describes_the_outputs_and_metadata_the_input(tmp_path: Path) -> None:
    tiny_artifact(tmp_path / "model")
    artifact = load_artifact(tmp_path / "model")
    signature = signature_for(artifact)
    assert signature.inputs is None  # checked by predict: see check_input
    assert signature.outputs.input_names() == ["class_map", "probabilities"]
    assert signature.params is None
    assert input_description(artifact) == {
        "shapes": ["(4, rows, cols)", "(n, 4, rows, cols)"],
        "bands": ["red", "green", "blue", "nir"],
        "dtypes": ["uint8", "float32"],
    }
