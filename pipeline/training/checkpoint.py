"""Checkpoints: one dict holding everything a training run needs to go on.

That is the unwrapped model's state, its constructor config, the optimizer,
scheduler and scaler states, the epoch, RNG states and the full training config.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import TrainingError


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CUDA too)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to a temporary file and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint this trainer wrote (it holds RNG states, so not weights-only).

    Raises:
        TrainingError: There is no checkpoint to resume from.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError("no checkpoint to resume from; start without --resume", path=path)
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint


def check_compatible(
    checkpoint: dict[str, Any], classes: list[str], bands: int, path: str | Path
) -> None:
    """The store must have the checkpoint's classes and band count.

    Raises:
        TrainingError: They differ; the message shows both.
    """
    saved_classes = checkpoint["classes"]
    saved_bands = checkpoint["model_config"]["in_channels"]
    if saved_classes != classes:
        raise TrainingError(
            f"classes differ from the checkpoint: store {classes}, checkpoint {saved_classes}; "
            "resume on the store it was trained on or start a new run",
            path=path,
        )
    if saved_bands != bands:
        raise TrainingError(
            f"band count differs from the checkpoint: store {bands}, checkpoint {saved_bands}; "
            "resume on the store it was trained on or start a new run",
            path=path,
        )
