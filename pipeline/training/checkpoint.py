"""Checkpoints: one dict holding everything a training run needs to go on.

That is the unwrapped model's state, its constructor config, the optimizer,
scheduler and scaler states, the epoch, RNG states and the full training config.

A checkpoint is plain data: tensors, numbers, strings, ``None``, and lists, tuples
and dicts of those; the RNG states are stored as tensors and numbers. It is
read with ``torch.load(weights_only=True)``, which builds nothing else, so a
crafted file cannot run code; a file holding other objects is refused.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.files import write_torch

REQUIRED_KEYS = ("model", "model_config", "config", "classes", "optimizer", "step", "state", "rng")
_SCALARS = (int, float, str, bool, type(None))


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CUDA too), as plain data.

    Returns:
        Generator states as tensors and numbers, restored by :func:`set_rng_state`.
    """
    version, words, gauss = random.getstate()
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the legacy form is a tuple, the other a dict
    algorithm, keys, position, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": {"version": version, "words": torch.tensor(words), "gauss": gauss},
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`.

    Args:
        state: What :func:`rng_state` returned, possibly through a checkpoint.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (numpy["algorithm"], keys, numpy["position"], numpy["has_gauss"], numpy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Fail unless ``value`` is plain data that ``torch.load(weights_only=True)`` reads back.

    Args:
        value: The checkpoint, or a part of it.
        where: Its place in the checkpoint, for the message.

    Raises:
        TypeError: A part is another kind of object (a NumPy array or scalar, a
            callable, a class instance); the message names the part.
    """
    if isinstance(value, Tensor) or type(value) in _SCALARS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in _SCALARS:
                raise TypeError(f"{where} has a key of type {type(key).__name__}")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    else:
        raise TypeError(f"{where} is a {type(value).__name__}, not plain data")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to a temporary file and rename it over ``path``.

    Args:
        path: Where the checkpoint goes.
        checkpoint: Plain data (see :func:`check_plain`).

    Returns:
        ``path``.

    Raises:
        TypeError: The checkpoint holds something other than plain data.
    """
    check_plain(checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_torch(tmp, checkpoint)  # a full disk: an OSError naming the file, none left
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint as plain data; nothing in the file is run.

    Args:
        path: A file written by :func:`save_checkpoint`.

    Returns:
        The checkpoint dict, its tensors on the CPU.

    Raises:
        TrainingError: There is no checkpoint; the file is truncated or damaged; it
            holds objects other than plain data (refused: loading them could run
            code); or it lacks a checkpoint's keys. The message is one line naming
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError("no checkpoint to resume from; start without --resume", path=path)
    fix = "resume from a checkpoint terraseg wrote, or start without --resume"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            "not loaded: the file holds objects other than tensors, numbers and strings "
            f"(loading them could run code) or is not a checkpoint; {fix}",
            path=path,
        ) from None
    except Exception:  # garbage makes the unpickler raise IndexError, KeyError, EOFError...
        raise TrainingError(f"the checkpoint is truncated or damaged; {fix}", path=path) from None
    if not isinstance(checkpoint, dict):
        raise TrainingError(f"not a checkpoint (no dict of training state); {fix}", path=path)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise TrainingError(f"not a checkpoint (no {', '.join(missing)}); {fix}", path=path)
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
