"""The terraseg model as an MLflow ``pyfunc`` model: an image array in, classes out.

``mlflow.pyfunc.load_model(uri).predict(images)`` takes a ``(N, bands, rows, cols)``
array in the artifact's input dtype (the logged signature says which) and returns
``{"class_map": (N, rows, cols) uint8, "probabilities": (N, classes, rows, cols)
float32}``. The wrapper itself (``unwrap_python_model()``, or :func:`predict_array`)
also accepts a single ``(bands, rows, cols)`` image of any numeric dtype.

Arrays larger than the tile size are predicted tile by tile on the shared tile grid
with a quarter-tile overlap, averaging the softmax where tiles overlap. This is
simple and correct, not the windowed blending of ``terraseg predict``.

This module imports only the artifact, the tile grid and the model, never the
training code, so that users outside terraseg can load a model cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from numpy.typing import NDArray

from pipeline.artifact import ModelArtifact, load_artifact
from pipeline.errors import ModelInputError
from pipeline.grid import plan_tiles
from pipeline.registry import PYFUNC_ARTIFACT_KEY

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from pipeline.model.deeplab import DeepLabV3Plus

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")  # the model's code, logged with it
PREDICT_BATCH = 4  # tiles per forward pass


def signature_for(artifact: ModelArtifact) -> ModelSignature:
    """The pyfunc input/output signature of ``artifact``: tensors with free batch and size.

    The ``tile_size`` parameter (default: the artifact's) sets the largest array
    predicted in one piece.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

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
        params=ParamSchema([ParamSpec("tile_size", "long", artifact.tile_size)]),
    )


class TerrasegPyfunc(PythonModel):
    """A :class:`ModelArtifact` folder served through ``mlflow.pyfunc``."""

    artifact: ModelArtifact
    model: DeepLabV3Plus

    def load_context(self, context: PythonModelContext) -> None:
        """Load the logged artifact folder and build the network."""
        self.load(context.artifacts[PYFUNC_ARTIFACT_KEY])

    def load(self, folder: str | Path) -> None:
        """Load an artifact folder directly (without MLflow)."""
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.artifact = load_artifact(folder)
        self.model = self.artifact.build_model(device)

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: np.ndarray,  # bare: MLflow infers no schema from it
        params: dict[str, Any] | None = None,
    ) -> dict[str, NDArray[Any]]:
        """Class map and probabilities of ``model_input`` (see the module docstring)."""
        tile_size = int((params or {}).get("tile_size") or self.artifact.tile_size)
        class_map, probabilities = predict_array(
            self.model, self.artifact, np.asarray(model_input), tile_size
        )
        return {"class_map": class_map, "probabilities": probabilities}


def predict_array(
    model: DeepLabV3Plus, artifact: ModelArtifact, images: NDArray[Any], tile_size: int
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Predict classes of ``(bands, rows, cols)`` or ``(N, bands, rows, cols)`` images.

    Args:
        model: The network, in eval mode.
        artifact: Its artifact (band count and normalization).
        images: Raw pixel values of any numeric dtype, bands in the artifact's order.
        tile_size: The largest side predicted in one piece; larger images are tiled.

    Returns:
        The class map (uint8, without the band axis) and the softmax probabilities
        (float32), each with a batch axis only when ``images`` had one.

    Raises:
        ModelInputError: Wrong number of dimensions or bands, or a non-numeric dtype.
    """
    single = images.ndim == 3
    batch = images[None] if single else images
    bands = len(artifact.band_names)
    if batch.ndim != 4 or batch.shape[1] != bands:
        raise ModelInputError(
            f"expected an array of shape ({bands}, rows, cols) or (N, {bands}, rows, cols) "
            f"with bands {', '.join(artifact.band_names)}; got shape {images.shape}"
        )
    if not (np.issubdtype(batch.dtype, np.number) or batch.dtype == np.bool_):
        raise ModelInputError(f"expected a numeric array, got dtype {batch.dtype}")
    probabilities = np.stack(
        [_tiled_softmax(model, artifact.normalization.apply(image), tile_size) for image in batch]
    )
    class_map = probabilities.argmax(axis=1).astype(np.uint8)  # channel index = class id
    return (class_map[0], probabilities[0]) if single else (class_map, probabilities)


def _tiled_softmax(
    model: DeepLabV3Plus, image: NDArray[np.float32], tile_size: int
) -> NDArray[np.float32]:
    """Softmax of one normalized (bands, rows, cols) image, averaged over overlapping tiles."""
    import torch

    device = next(model.parameters()).device
    rows, cols = image.shape[1:]
    windows = plan_tiles((rows, cols), tile_size, overlap=tile_size // 4)
    total: NDArray[np.float32] | None = None
    counts = np.zeros((rows, cols), dtype=np.float32)
    for start in range(0, len(windows), PREDICT_BATCH):
        group = windows[start : start + PREDICT_BATCH]
        tiles = np.stack([image[(slice(None), *w.slices())] for w in group])
        with torch.inference_mode():
            logits = model(torch.from_numpy(tiles).to(device))  # (B, classes, h, w)
            softmax = torch.softmax(logits, dim=1).float().cpu().numpy()
        if total is None:
            total = np.zeros((softmax.shape[1], rows, cols), dtype=np.float32)
        for window, tile in zip(group, softmax, strict=True):
            total[(slice(None), *window.slices())] += tile
            counts[window.slices()] += 1
    assert total is not None  # a plan has at least one tile
    return (total / counts).astype(np.float32)
