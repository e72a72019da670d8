"""Training plots as PNG files: confusion matrix, learning curves, validation overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: NDArray[Any], names: list[str], path: Path, title: str) -> Path:
    """Row-normalized confusion matrix (true rows, predicted columns) with counts."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), value in np.ndenumerate(share):
        color = "white" if value > 0.5 else "black"
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and validation mean IoU per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train/loss"] for h in history], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(epochs, [h["val/mean_iou"] for h in history], marker="o", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel("validation mean IoU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def colorize(label: NDArray[Any], classes: ClassTable) -> NDArray[np.uint8]:
    """RGB image of a label map; ignored pixels are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, cls in enumerate(classes.classes):
        lut[index] = cls.color
    lut[IGNORE_LABEL] = 0
    return lut[np.asarray(label, dtype=np.uint8)]


def display_rgb(image: NDArray[Any]) -> NDArray[np.float64]:
    """A normalized (bands, rows, cols) image as RGB in [0, 1]: first three bands, ±2 std."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.clip((np.moveaxis(bands, 0, -1) + 2.0) / 4.0, 0.0, 1.0)


def plot_overlays(
    samples: list[tuple[Any, Any, Any]], classes: ClassTable, path: Path, title: str
) -> Path:
    """Rows of image, label and prediction side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for row, (image, label, pred) in enumerate(samples):
        panels = [display_rgb(np.asarray(image)), colorize(label, classes), colorize(pred, classes)]
        for ax, panel, name in zip(
            axes[row], panels, ("image", "label", "prediction"), strict=True
        ):
            ax.imshow(panel)
            ax.set_axis_off()
            ax.set_title(name if row == 0 else "")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
