"""Test-time augmentation: predict under flips and rotations, undo them, average."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
Transform = tuple[int, bool]  # (quarter turns, flip left-right first)

TTA_TRANSFORMS: dict[str, list[Transform]] = {
    "none": [(0, False)],
    "flips": [(0, False), (0, True), (2, True), (2, False)],  # identity, lr, ud, both
    "d4": [(k, flip) for flip in (False, True) for k in range(4)],
}


def apply(batch: F32, transform: Transform) -> F32:
    """Transform a (N, C, H, W) batch."""
    turns, flip = transform
    out = batch[..., ::-1] if flip else batch
    return np.ascontiguousarray(np.rot90(out, turns, axes=(2, 3)))


def undo(batch: F32, transform: Transform) -> F32:
    """Invert :func:`apply`."""
    turns, flip = transform
    out = np.rot90(batch, -turns, axes=(2, 3))
    return np.ascontiguousarray(out[..., ::-1] if flip else out)


def with_tta(predict: Callable[[F32], F32], mode: str) -> Callable[[F32], F32]:
    """Wrap a batch predictor so it averages over the ``mode`` transforms."""
    try:
        transforms = TTA_TRANSFORMS[mode]
    except KeyError:
        raise ValueError(
            f"unknown TTA {mode!r} (choose from {', '.join(TTA_TRANSFORMS)})"
        ) from None
    if len(transforms) == 1:
        return predict

    def averaged(batch: F32) -> F32:
        total = undo(predict(apply(batch, transforms[0])), transforms[0])
        for transform in transforms[1:]:
            total += undo(predict(apply(batch, transform)), transform)
        return total / np.float32(len(transforms))

    return averaged
