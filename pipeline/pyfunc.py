"""The terraseg model as an MLflow ``pyfunc`` model: an image array in, classes out.

``mlflow.pyfunc.load_model(uri).predict(images)`` takes one ``(bands, rows, cols)``
image or a batch ``(N, bands, rows, cols)``, bands in the artifact's order, in the
artifact's input dtype (the training rasters' dtype) or float32, and returns
``{"class_map": uint8 class ids, "probabilities": float32 softmax}``: ``(rows, cols)``
and ``(classes, rows, cols)`` for one image, with a leading ``N`` for a batch. Any
other input is refused with a one-line :class:`ModelInputError`. float32 is accepted
beside the training dtype because the model normalizes every input to float32 first:
a float32 array holding the same values predicts the same classes. NaN pixels of a
float32 input get class 255 and probabilities 0. An integer array of another type
is accepted where the training dtype is an integer type that holds all its values:
a JSON request to ``mlflow models serve`` arrives as int64.

The check is :func:`check_input`, in :meth:`TerrasegPyfunc.predict`, not an MLflow
input schema: a tensor schema has a fixed number of dimensions and MLflow reports a
mismatch with the whole array printed. The logged signature describes the outputs
only; the MLmodel metadata key ``terraseg_input`` describes the input.

Images of any size are predicted as ``terraseg predict`` predicts a raster, through
:func:`terraseg.pipeline.prediction.arrays.predict_array`: the same tile grid, overlap and
windowed blending, in fp32 (:data:`PYFUNC_CONFIG`), so the result does not depend on
the CPU's bf16 support.

A logged model carries the terraseg package's source (:func:`write_package_source`,
MLflow's ``code_paths``) and needs only mlflow, torch and numpy installed: this
module's imports (the artifact, the model, the array prediction) use nothing else,
neither the training code nor the raster and store I/O. Where terraseg is already
imported, the installed package is used, not the copy.
"""

from __future__ import annotations

import shutil
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
INPUT_METADATA_KEY = "terraseg_input"  # MLmodel metadata: what predict() accepts
PACKAGE_FOLDERS = ("pipeline", "workflows")  # terraseg's subpackages, shipped with the model


def signature_for(artifact: ModelArtifact) -> ModelSignature:
    """The pyfunc signature of ``artifact``: its two output tensors, free batch and size.

    The input has no MLflow schema (see the module docstring); :func:`input_description`
    says what :meth:`TerrasegPyfunc.predict` accepts.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    classes = int(artifact.model_config["num_classes"])
    return ModelSignature(
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "class_map"),
                TensorSpec(np.dtype(np.float32), (-1, classes, -1, -1), "probabilities"),
            ]
        ),
    )


def accepted_dtypes(artifact: ModelArtifact) -> list[str]:
    """The input dtypes the pyfunc accepts: the training dtype, and float32."""
    return list(dict.fromkeys([np.dtype(artifact.input_dtype).name, "float32"]))


def input_description(artifact: ModelArtifact) -> dict[str, Any]:
    """What :meth:`TerrasegPyfunc.predict` accepts, as logged in the MLmodel metadata."""
    bands = len(artifact.band_names)
    return {
        "shapes": [f"({bands}, rows, cols)", f"(n, {bands}, rows, cols)"],
        "bands": list(artifact.band_names),
        "dtypes": accepted_dtypes(artifact),
    }


def check_input(artifact: ModelArtifact, images: object) -> NDArray[Any]:
    """``images`` if the pyfunc accepts it (see the module docstring).

    Raises:
        ModelInputError: Not a numpy array, a shape other than ``(bands, rows, cols)``
            or ``(n, bands, rows, cols)`` with the model's bands, or another dtype
            (other than integers within the training dtype's range, which are cast to
            it); the message is one line.
    """
    if not isinstance(images, np.ndarray):
        raise ModelInputError(f"expected a numpy array, got {type(images).__name__}")
    shapes = " or ".join(input_description(artifact)["shapes"])
    if images.ndim not in (3, 4) or images.shape[-3] != len(artifact.band_names):
        raise ModelInputError(
            f"expected an array of shape {shapes} with bands "
            f"{', '.join(artifact.band_names)}; got shape {images.shape}"
        )
    if 0 in images.shape:
        raise ModelInputError(f"expected an array of shape {shapes}; got the empty {images.shape}")
    dtypes = accepted_dtypes(artifact)
    if images.dtype.name in dtypes:
        return images
    training = np.dtype(artifact.input_dtype)
    if _integers_within(images, training):
        return images.astype(training)
    alternative = "".join(f" or {name}" for name in dtypes[1:])
    if np.issubdtype(training, np.integer):
        alternative += f", or integers within {training.name}'s range"
    got = f"{images.dtype}"
    if np.issubdtype(images.dtype, np.integer):
        got += f" with values from {images.min()} to {images.max()}"
    raise ModelInputError(
        f"expected dtype {training.name} (the training rasters'){alternative}; "
        f"got {got}: convert with .astype({training.name!r})"
    )


def _integers_within(images: NDArray[Any], dtype: np.dtype[Any]) -> bool:
    """Whether ``images`` holds integers and ``dtype``, an integer type, holds them all."""
    if not (np.issubdtype(images.dtype, np.integer) and np.issubdtype(dtype, np.integer)):
        return False
    limits = np.iinfo(dtype)
    return bool(images.min() >= limits.min and images.max() <= limits.max)


def write_package_source(folder: Path) -> Path:
    """Write the terraseg package's Python source to ``folder/terraseg``, for ``code_paths``.

    The layout is the installed one: ``terraseg/__init__.py``, ``terraseg/pipeline``,
    ``terraseg/workflows``, ``.py`` files only (no ``__pycache__``), whether terraseg
    runs from its source tree (where both folders are links) or from a wheel.

    Returns:
        The written ``folder/terraseg``.
    """
    import terraseg

    source = Path(terraseg.__file__).parent
    target = Path(folder) / "terraseg"
    target.mkdir(parents=True)
    shutil.copy2(source / "__init__.py", target / "__init__.py")
    for name in PACKAGE_FOLDERS:
        shutil.copytree(source / name, target / name, ignore=_not_source)
    return target


def _not_source(folder: str, names: list[str]) -> set[str]:
    """The entries of ``folder`` that :func:`write_package_source` leaves out."""
    return {
        name
        for name in names
        if name == "__pycache__" or not (name.endswith(".py") or Path(folder, name).is_dir())
    }


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
        """Class map and probabilities of ``model_input`` (see the module docstring).

        Raises:
            ModelInputError: ``model_input`` is not accepted (see :func:`check_input`).
        """
        images = check_input(self.artifact, model_input)
        class_map, probabilities = predict_array(self.artifact, images, self.predict_tiles)
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
