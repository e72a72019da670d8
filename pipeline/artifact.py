"""The self-contained model artifact: everything prediction needs, in one folder.

A folder holds ``terraseg_model.json`` (architecture config, band names and
order, normalization statistics, classes with names and colours, tile size, and
free-form metadata such as the training run and its metrics) and ``weights.pt``
(the model's state dict, loadable with ``torch.load(weights_only=True)``), and,
for models that can run in int8, ``int8_calibration.pt`` (the backbone's
activation ranges, see :mod:`pipeline.model.quantization`). Nothing else is
looked up at prediction time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.classes import ClassTable
from pipeline.errors import InputError
from pipeline.files import atomic_output

if TYPE_CHECKING:
    import torch

    from pipeline.model.deeplab import DeepLabV3Plus

ARTIFACT_FORMAT = "terraseg-model/1"
MANIFEST = "terraseg_model.json"
WEIGHTS = "weights.pt"
CALIBRATION = "int8_calibration.pt"


@dataclass
class Normalization:
    """Per-band statistics the model was trained with: ``x' = (x - mean) / std``."""

    mean: list[float]
    std: list[float]

    def apply(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """Normalize an image of shape (bands, rows, cols) or (batch, bands, rows, cols)."""
        shape = (-1, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.maximum(np.asarray(self.std, dtype=np.float32), 1e-6).reshape(shape)
        return ((image.astype(np.float32) - mean) / std).astype(np.float32)

    @classmethod
    def from_statistics(cls, statistics: list[dict[str, Any]]) -> Normalization:
        """From the ``statistics`` attribute of a training store."""
        return cls([float(s["mean"]) for s in statistics], [float(s["std"]) for s in statistics])


@dataclass
class ModelArtifact:
    """A trained model with everything needed to apply it to new rasters."""

    model_config: dict[str, Any]
    band_names: list[str]
    normalization: Normalization
    classes: ClassTable
    tile_size: int
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    input_dtype: str = "uint8"
    metadata: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def manifest(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-ready data."""
        return {
            "format": ARTIFACT_FORMAT,
            "model_config": self.model_config,
            "band_names": self.band_names,
            "normalization": {"mean": self.normalization.mean, "std": self.normalization.std},
            **self.classes.to_dict(),
            "tile_size": self.tile_size,
            "input_dtype": self.input_dtype,
            "metadata": self.metadata,
        }

    def build_model(self, device: str | torch.device = "cpu") -> DeepLabV3Plus:
        """The network with these weights, in eval mode."""
        from pipeline.model.config import ModelConfig
        from pipeline.model.deeplab import build_model

        config = ModelConfig(**{**self.model_config, "pretrained_weights": None})
        model = build_model(config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def weights_digest(artifact: ModelArtifact) -> str:
    """A content hash of the weights and the int8 calibration (16 hex digits).

    Two artifacts with this digest compute the same pixels; a model folder
    retrained in place gets a new one, so outputs made by the old weights are redone.
    """
    import torch

    digest = hashlib.sha256()
    for part in (artifact.state_dict, artifact.calibration or {}):
        for name in sorted(part):
            tensor = part[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_artifact(artifact: ModelArtifact, folder: str | Path) -> Path:
    """Write ``artifact`` into ``folder`` (replaced atomically when it exists)."""
    import torch

    with atomic_output(folder) as tmp:
        tmp.mkdir(parents=True)
        (tmp / MANIFEST).write_text(json.dumps(artifact.manifest(), indent=2, default=str))
        torch.save(artifact.state_dict, tmp / WEIGHTS)
        if artifact.calibration is not None:
            torch.save(artifact.calibration, tmp / CALIBRATION)
    return Path(folder)


def load_artifact(folder: str | Path) -> ModelArtifact:
    """Read an artifact written by :func:`save_artifact`.

    Raises:
        InputError: The folder is not a terraseg model artifact.
    """
    import torch

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(f"not a terraseg model (expected {MANIFEST} and {WEIGHTS})", path=folder)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise InputError(f"unsupported model format {manifest.get('format')!r}", path=folder)
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    calibration = None
    if (folder / CALIBRATION).is_file():
        calibration = torch.load(folder / CALIBRATION, map_location="cpu", weights_only=True)
    return ModelArtifact(
        model_config=manifest["model_config"],
        band_names=manifest["band_names"],
        normalization=Normalization(**manifest["normalization"]),
        classes=ClassTable.model_validate({"classes": manifest["classes"]}),
        tile_size=int(manifest["tile_size"]),
        state_dict=state,
        input_dtype=manifest.get("input_dtype", "uint8"),
        metadata=manifest.get("metadata", {}),
        calibration=calibration,
    )
