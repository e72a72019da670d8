"""A tiny model and a stand-in for the trainer that reports to a tracker as the trainer does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from terraseg.pipeline.artifact import ModelArtifact, Normalization, save_artifact
from terraseg.pipeline.classes import default_class_table
from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.model.deeplab import DeepLabV3Plus, build_model
from terraseg.pipeline.training.tracker import Tracker, code_version, flatten

# two members: the model a small store trains by default is an ensemble, and the MLflow
# model (pyfunc, registry, fresh interpreters) must serve it as such
TINY_CONFIG = ModelConfig(
    backbone="mobilenetv2", width_multiplier=0.25, in_channels=4, num_classes=5, members=2
)
BANDS = ["red", "green", "blue", "nir"]
NORMALIZATION = Normalization([100.0, 90.0, 80.0, 120.0], [30.0, 25.0, 20.0, 40.0])


@dataclass
class Trained:
    """What a fake training session produced in one tracking store."""

    tracking_uri: str
    name: str  # registered model name
    model: DeepLabV3Plus
    artifact_dir: Path
    run_ids: list[str] = field(default_factory=list)
    model_uris: list[str] = field(default_factory=list)


def tiny_artifact(folder: Path, seed: int = 0) -> DeepLabV3Plus:
    """Save a randomly initialized tiny model as an artifact in ``folder``; return the model."""
    torch.manual_seed(seed)
    model = build_model(TINY_CONFIG).eval()
    artifact = ModelArtifact(
        model_config=TINY_CONFIG.model_dump(mode="json"),
        band_names=BANDS,
        normalization=NORMALIZATION,
        classes=default_class_table(),
        tile_size=64,
        state_dict=model.state_dict(),
        metadata={"seed": seed},
    )
    save_artifact(artifact, folder)
    return model


def fake_training(tracker: Tracker, workdir: Path, epochs: int = 2, seed: int = 0) -> str | None:
    """Report params, per-epoch metrics, files and the model, in the trainer's order."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "model": TINY_CONFIG.model_dump(mode="json"),
        "train": {"epochs": epochs, "lr": 0.01, "batch_size": 4, "experiment": "tests"},
        "data": {"store": str(workdir / "dataset.zarr")},
    }
    statistics = {
        f"data.statistics.{b}.mean": m for b, m in zip(BANDS, NORMALIZATION.mean, strict=True)
    }
    tracker.log_params({**flatten(config), **statistics, **code_version()})
    names = default_class_table().names
    for epoch in range(epochs):
        metrics = {"train.loss": 1.0 / (epoch + 1), "train.lr": 0.01 * 0.5**epoch}
        metrics |= {"val.miou": 0.3 + 0.1 * epoch, "val.accuracy": 0.6 + 0.1 * epoch}
        metrics |= {f"val.iou.{name}": 0.1 * i + 0.05 * epoch for i, name in enumerate(names)}
        metrics |= {"train.tiles_per_s": 12.5}
        tracker.log_metrics(metrics, step=epoch)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    tracker.log_artifact(workdir / "config.yaml")
    for name, folder in [("confusion_matrix", "plots"), ("learning_curves", "plots")]:
        tracker.log_artifact(_png(workdir / f"{name}.png", seed), folder)
    tracker.log_artifact(_png(workdir / "tile_0000.png", seed), "overlays")
    tiny_artifact(workdir / "model", seed)
    return tracker.log_model(workdir / "model")


def _png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def sample_images(count: int = 2, size: int = 64, seed: int = 1) -> np.ndarray:
    """Random uint8 images of shape (count, bands, size, size)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (count, len(BANDS), size, size), dtype=np.uint8)


def reference_softmax(model: DeepLabV3Plus, images: np.ndarray) -> np.ndarray:
    """The in-memory model's softmax of ``images``."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(NORMALIZATION.apply(images)))
    return torch.softmax(logits, dim=1).numpy()
