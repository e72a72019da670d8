"""The self-contained model artifact: everything prediction needs, in one folder.

A folder holds ``terraseg_model.json`` (architecture config, band names and
order, normalization statistics, classes with names and colours, tile size, and
free-form metadata such as the training run and its metrics; ``class_index`` maps
each class id to its output, see :mod:`terraseg.pipeline.classes`) and ``weights.pt``
(the model's state dict, loadable with ``torch.load(weights_only=True)``), and,
for models that can run in int8, ``int8_calibration.pt`` (the backbone's
activation ranges, see :mod:`terraseg.pipeline.model.quantization`). Nothing else is
looked up at prediction time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import InputError, WeightsError
from terraseg.pipeline.files import atomic_output, finite, named_os_errors, write_torch

if TYPE_CHECKING:
    import torch

    from terraseg.pipeline.model.deeplab import DeepLabV3Plus
    from terraseg.pipeline.model.ensemble import Ensemble

ARTIFACT_FORMAT = "terraseg-model/1"
MANIFEST = "terraseg_model.json"
WEIGHTS = "weights.pt"
CALIBRATION = "int8_calibration.pt"


NormalizationMethod = Literal["mean_std", "percentile"]


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
    def from_statistics(
        cls, statistics: list[dict[str, Any]], method: NormalizationMethod = "mean_std"
    ) -> Normalization:
        """From the ``statistics`` attribute of a training store.

        Args:
            statistics: Per band: ``mean``, ``std``, ``p2`` and ``p98`` of valid pixels.
            method: ``mean_std``: centre the mean, scale by the std. ``percentile``:
                centre the midpoint of the 2nd and 98th percentiles, scale by a quarter
                of their distance (the std of a normal band), so that bright clouds,
                saturated or stray values do not squeeze the rest of the band. Either
                is stored as a mean and std; prediction applies it the same way.
        """
        if method == "percentile" and all(_finite(s.get("p2"), s.get("p98")) for s in statistics):
            centre = [(float(s["p2"]) + float(s["p98"])) / 2 for s in statistics]
            scale = [(float(s["p98"]) - float(s["p2"])) / 4 or float(s["std"]) for s in statistics]
            return cls(centre, scale)
        return cls([float(s["mean"]) for s in statistics], [float(s["std"]) for s in statistics])


def _finite(*values: Any) -> bool:
    return all(v is not None and np.isfinite(float(v)) for v in values)


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
            "class_index": self.classes.class_index(),
            "tile_size": self.tile_size,
            "input_dtype": self.input_dtype,
            "metadata": self.metadata,
        }

    def build_model(self, device: str | torch.device = "cpu") -> DeepLabV3Plus | Ensemble:
        """The network with these weights, in eval mode."""
        from terraseg.pipeline.model.config import ModelConfig, stored_model_config
        from terraseg.pipeline.model.deeplab import build_model

        saved = stored_model_config(self.model_config)
        config = ModelConfig(**{**saved, "pretrained_weights": None})
        model = build_model(config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise WeightsError(
                "the weights do not fit the architecture in the model description "
                f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})"
            ) from None
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
    with named_os_errors(folder), atomic_output(folder) as tmp:  # a full disk names folder
        tmp.mkdir(parents=True)
        manifest = finite(artifact.manifest())  # strict JSON: a NaN metric becomes null
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str, allow_nan=False))
        write_torch(tmp / WEIGHTS, artifact.state_dict)
        if artifact.calibration is not None:
            write_torch(tmp / CALIBRATION, artifact.calibration)
    return Path(folder)


def load_artifact(folder: str | Path) -> ModelArtifact:
    """Read an artifact written by :func:`save_artifact`.

    Raises:
        InputError: The folder is not a terraseg model artifact, or a file of it is
            damaged or inconsistent (the message names the file).
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(f"not a terraseg model (expected {MANIFEST} and {WEIGHTS})", path=folder)
    manifest = _read_manifest(manifest_path)
    calibration = None
    if (folder / CALIBRATION).is_file():
        calibration = _read_tensors(folder / CALIBRATION)
    weights = _read_tensors(folder / WEIGHTS)
    try:
        artifact = ModelArtifact(
            model_config=dict(manifest["model_config"]),
            band_names=list(manifest["band_names"]),
            normalization=Normalization(**manifest["normalization"]),
            classes=ClassTable.from_mapping(manifest),
            tile_size=int(manifest["tile_size"]),
            state_dict=weights,
            input_dtype=manifest.get("input_dtype", "uint8"),
            metadata=manifest.get("metadata", {}),
            calibration=calibration,
        )
    except (KeyError, TypeError, ValueError) as exc:
        missing = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise InputError(f"model description is incomplete or invalid: {missing}",
                         path=manifest_path) from None  # fmt: skip
    _check_consistent(artifact, manifest.get("class_index"), manifest_path)
    return artifact


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed model description; one-line errors for a damaged or foreign file."""
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"model description is not valid JSON ({exc})", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InputError(f"unsupported model format {found!r}", path=path.parent)
    return manifest


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, loaded without running code."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot load tensors (damaged or not a weights file: {reason})",
                         path=path) from None  # fmt: skip
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("not a dictionary of tensors", path=path)
    return state


def _check_consistent(artifact: ModelArtifact, class_index: Any, manifest: Path) -> None:
    """The description, the classes and the weights must agree.

    A description without ``class_index`` (written before class ids were mapped to
    outputs) has outputs in id order, which for its ids 0..N-1 is each id's own.
    """
    if class_index is not None and class_index != artifact.classes.class_index():
        raise InputError(
            f"class_index {class_index} does not give the classes in id order "
            f"({artifact.classes.class_index()})",
            path=manifest,
        )
    configured = artifact.model_config.get("num_classes")
    if configured is not None and configured != artifact.classes.num_classes:
        raise InputError(
            f"the model has {configured} outputs but {artifact.classes.num_classes} classes "
            "are listed",
            path=manifest,
        )
    if artifact.tile_size < 16:
        raise InputError(f"tile_size {artifact.tile_size} is too small", path=manifest)
