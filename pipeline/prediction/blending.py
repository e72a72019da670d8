"""Blending windows: how much each tile's prediction counts at each of its pixels.

A tile's weight is the outer product of two 1-D profiles. Along an axis, the
profile is 1 in the tile's core and ramps up over the first ``overlap`` pixels
and down over the last ``overlap`` pixels, except at a side that lies on the
raster border, which does not fade (nothing else covers those pixels).

Within a ramp the outer quarter (the *guard*) has weight exactly 0: pixels that
close to a tile edge see zero padding instead of image, and whichever
neighbour covers them does so from well inside its own tile. With a guard at
least as wide as a model's receptive-field radius, blending reproduces the
whole-raster prediction exactly. The rest of the ramp follows the chosen shape.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def _spline(u: F32) -> F32:
    """Quadratic spline ramp: C1-smooth from 0 to 1."""
    return np.asarray(np.where(u < 0.5, 2 * u * u, 1 - 2 * (1 - u) ** 2), dtype=np.float32)


def _hann(u: F32) -> F32:
    return np.asarray(0.5 - 0.5 * np.cos(np.pi * u), dtype=np.float32)


def _gaussian(u: F32) -> F32:
    g = np.exp(-0.5 * ((1 - u) / 0.4) ** 2)
    g0 = np.exp(-0.5 * (1 / 0.4) ** 2)
    return np.asarray((g - g0) / (1 - g0), dtype=np.float32)


def _flat(u: F32) -> F32:
    return np.ones_like(u)


WindowName = Literal["spline", "gaussian", "hann", "flat"]  # the one list of window names

BLEND_WINDOWS: dict[str, Callable[[F32], F32]] = {
    "spline": _spline,
    "gaussian": _gaussian,
    "hann": _hann,
    "flat": _flat,
}


def guard_width(overlap: int) -> int:
    """Pixels of zero weight at a tile's inner edges: a quarter of the overlap."""
    return overlap // 4


def ramp(overlap: int, kind: str) -> F32:
    """Weights over the ``overlap`` pixels at a fading tile edge, outermost first."""
    if overlap == 0:
        return np.ones(0, dtype=np.float32)
    guard = guard_width(overlap)
    span = overlap - guard
    u = ((np.arange(span) + 0.5) / span).astype(np.float32)
    try:
        shape = BLEND_WINDOWS[kind]
    except KeyError:
        raise ValueError(
            f"unknown window {kind!r} (choose from {', '.join(BLEND_WINDOWS)})"
        ) from None
    return np.concatenate([np.zeros(guard, dtype=np.float32), shape(u)])


def profile(size: int, overlap: int, kind: str, fade_start: bool, fade_end: bool) -> F32:
    """The 1-D weight profile of a tile of ``size`` pixels along one axis."""
    weights = np.ones(size, dtype=np.float32)
    edge = ramp(min(overlap, size // 2), kind)
    if fade_start and len(edge):
        weights[: len(edge)] = np.minimum(weights[: len(edge)], edge)
    if fade_end and len(edge):
        weights[size - len(edge) :] = np.minimum(weights[size - len(edge) :], edge[::-1])
    return weights


def tile_weights(
    offset: tuple[int, int],
    size: tuple[int, int],
    raster_shape: tuple[int, int],
    overlap: int,
    kind: str,
) -> F32:
    """The 2-D weight of a tile at ``offset`` (row, col) of a raster of ``raster_shape``.

    Sides on the raster border do not fade. The array is shared between tiles
    with the same size and borders, so it is read-only.
    """
    fades = (
        offset[0] > 0,
        offset[0] + size[0] < raster_shape[0],
        offset[1] > 0,
        offset[1] + size[1] < raster_shape[1],
    )
    return _weights(size, overlap, kind, fades)


@lru_cache(maxsize=64)
def _weights(
    size: tuple[int, int], overlap: int, kind: str, fades: tuple[bool, bool, bool, bool]
) -> F32:
    rows = profile(size[0], overlap, kind, fades[0], fades[1])
    cols = profile(size[1], overlap, kind, fades[2], fades[3])
    weights = np.outer(rows, cols).astype(np.float32)
    weights.flags.writeable = False
    return weights
