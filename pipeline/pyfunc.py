"""The terraseg model as an MLflow ``pyfunc`` model: an image array in, classes out.

``mlflow.pyfunc.load_model(uri).predict(images)`` takes a ``(N, bands, rows, cols)``
array in the artifact's input dtype (the logged signature says which) and returns
``{"class_map": (N, rows, cols) uint8, "probabilities": (N, classes, rows, cols)
float32}``. The wrapper itself (``unwrap_python_model()``, or :func:`predict_array`)
also accepts a single ``(bands, rows, cols)`` image of any numeric dtype.

Images of any size are predicted as ``terraseg predict`` predicts a raster, through
:func:`terraseg.pipeline.prediction.arrays.predict_array`: the same tile grid, overlap and
windowed blending, in fp32 (:data:`PYFUNC_CONFIG`), so the result does not depend on
the CPU's bf16 support.

This module imports the artifact, the model and the array prediction, never the
training code or the raster and store I/O, so that users outside terraseg can load
a model cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from numpy.typing import NDArray

from terraseg.pipeline.artifact import ModelArtifact, load_artifact
from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.prediction.arrays import predict_array as predict_image
from terraseg.pipeline.prediction.blocks import BatchPredictor
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.inference import predictor_for
from terraseg.pipeline.registry import PYFUNC_ARTIFACT_KEY

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")  # the model's code, logged with it
PYFUNC_CONFIG = PredictConfig(precision="fp32")  # the pyfunc's settings of array prediction


def signature_for(artifact: ModelArtifact) -> ModelSignature:
    """The pyfunc input/output signature of ``artifact``: tensors with free batch and size."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    bands = len(artifact.band_names)
    classes = int(artifact.model_config["num_classes"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(artifact.input_dtype), (-1, bands, -1, -1))]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "class_map"),
                TensorSpec(np.dtype(np.float32), (-1, classes, -1, -1), "probabilities"),
            ]
        ),
    )


class TerrasegPyfunc(PythonModel):
    """A :class:`ModelArtifact` folder served through ``mlflow.pyfunc``."""

    artifact: ModelArtifact
    predict_tiles: BatchPredictor

    def load_context(self, context: PythonModelContext) -> None:
        """Load the logged artifact folder and build the network."""
        self.load(context.artifacts[PYFUNC_ARTIFACT_KEY])

    def load(self, folder: str | Path) -> None:
        """Load an artifact folder directly (without MLflow)."""
        self.artifact = load_artifact(folder)
        self.predict_tiles = predictor_for(
            self.artifact, PYFUNC_CONFIG.device, PYFUNC_CONFIG.precision, PYFUNC_CONFIG.tta
        )

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: np.ndarray,  # bare: MLflow infers no schema from it
        params: dict[str, Any] | None = None,
    ) -> dict[str, NDArray[Any]]:
        """Class map and probabilities of ``model_input`` (see the module docstring)."""
        class_map, probabilities = predict_array(
            self.artifact, np.asarray(model_input), self.predict_tiles
        )
        return {"class_map": class_map, "probabilities": probabilities}


def predict_array(
    artifact: ModelArtifact, images: NDArray[Any], predict: BatchPredictor | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Predict classes of ``(bands, rows, cols)`` or ``(N, bands, rows, cols)`` images.

    Args:
        artifact: The model.
        images: Raw pixel values of any numeric dtype, bands in the artifact's order.
        predict: The artifact's batch predictor (default: built for this call).

    Returns:
        The class map (uint8, without the band axis; 255 where a pixel is NaN) and
        the softmax probabilities (float32), each with a batch axis only when
        ``images`` had one.

    Raises:
        ModelInputError: Wrong number of dimensions or bands, or a non-numeric dtype.
    """
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4:
        bands = len(artifact.band_names)
        raise ModelInputError(
            f"expected an array of shape ({bands}, rows, cols) or (N, {bands}, rows, cols); "
            f"got shape {images.shape}"
        )
    results = [
        predict_image(artifact, image, config=PYFUNC_CONFIG, predict=predict) for image in batch
    ]
    class_map = np.stack([r.classes for r in results])
    probabilities = np.stack([r.probabilities for r in results])
    return (class_map[0], probabilities[0]) if single else (class_map, probabilities)
