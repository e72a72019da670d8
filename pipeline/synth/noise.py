"""Seamless procedural noise addressed by global pixel coordinates.

Every value depends only on (seed, row, col), never on the block being drawn, so
a scene painted block by block is identical to one painted in a single pass.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 finalizer: a bijective, well-mixed 64-bit hash."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


def hash_coords(seed: int, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> NDArray[np.uint64]:
    """A 64-bit hash of integer coordinates (broadcast together) and a seed."""
    with np.errstate(over="ignore"):
        start = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        h = _splitmix(start ^ rows.astype(np.int64).view(np.uint64))
        return _splitmix(h ^ (cols.astype(np.int64).view(np.uint64) * _GOLDEN))


def uniform(seed: int, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> FloatArray:
    """Uniform values in [0, 1) for each coordinate pair."""
    bits = hash_coords(seed, rows, cols) >> np.uint64(40)  # 24 bits
    return (bits.astype(np.float32) / np.float32(1 << 24)).astype(np.float32)


def white_noise(seed: int, row0: int, col0: int, shape: tuple[int, int]) -> FloatArray:
    """Zero-mean, unit-variance per-pixel noise (a triangular approximation of a Gaussian)."""
    rows = np.arange(row0, row0 + shape[0], dtype=np.int64)[:, None]
    cols = np.arange(col0, col0 + shape[1], dtype=np.int64)[None, :]
    h = hash_coords(seed, rows, cols)
    low = (h & np.uint64(0xFFFFFF)).astype(np.float32)
    high = (h >> np.uint64(40)).astype(np.float32)
    return ((low + high) / np.float32(1 << 24) - 1.0) * np.float32(np.sqrt(6.0))


def _interpolation_matrix(start: int, count: int, wavelength: float) -> tuple[FloatArray, int]:
    """Weights (count, lattice) that interpolate lattice values to pixel centres.

    Pixel ``p`` sits at lattice coordinate ``(p + 0.5) / wavelength``; its value
    blends the two neighbouring lattice nodes with a smoothstep weight.
    """
    position = (np.arange(start, start + count, dtype=np.float64) + 0.5) / wavelength
    node = np.floor(position).astype(np.int64)
    t = position - node
    t = t * t * (3.0 - 2.0 * t)
    first = int(node.min())
    lattice = int(node.max()) - first + 2
    weights = np.zeros((count, lattice), dtype=np.float32)
    index = np.arange(count)
    weights[index, node - first] = 1.0 - t
    weights[index, node - first + 1] = t
    return weights, first


def value_noise(
    seed: int, row0: int, col0: int, shape: tuple[int, int], wavelength: float
) -> FloatArray:
    """Smooth noise in [0, 1] with features about ``wavelength`` pixels across.

    Computed as ``Wr @ L @ Wc.T`` where ``L`` holds hashed lattice values and the
    ``W`` matrices interpolate them, so the cost is two small matrix products.
    """
    if wavelength <= 1.0:
        return white_noise(seed, row0, col0, shape) * np.float32(0.2) + np.float32(0.5)
    w_rows, r_first = _interpolation_matrix(row0, shape[0], wavelength)
    w_cols, c_first = _interpolation_matrix(col0, shape[1], wavelength)
    lattice_rows = np.arange(r_first, r_first + w_rows.shape[1], dtype=np.int64)[:, None]
    lattice_cols = np.arange(c_first, c_first + w_cols.shape[1], dtype=np.int64)[None, :]
    lattice = uniform(seed, lattice_rows, lattice_cols)
    return np.asarray(w_rows @ lattice @ w_cols.T, dtype=np.float32)


def fractal_noise(
    seed: int,
    row0: int,
    col0: int,
    shape: tuple[int, int],
    wavelength: float,
    octaves: int = 3,
    persistence: float = 0.5,
) -> FloatArray:
    """Sum of value-noise octaves, rescaled to zero mean and roughly [-1, 1]."""
    total = np.zeros(shape, dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        layer = value_noise(seed + 7919 * octave, row0, col0, shape, wavelength / 2**octave)
        total += np.float32(amplitude) * (layer - np.float32(0.5))
        norm += amplitude
        amplitude *= persistence
    return total * np.float32(2.0 / norm)


def noise_at(
    seed: int, x: NDArray[np.float64], y: NDArray[np.float64], wavelength: float
) -> NDArray[np.float64]:
    """Smooth noise in [0, 1] at arbitrary points (same lattice rule as :func:`value_noise`)."""
    px, py = (
        np.asarray(x, dtype=np.float64) / wavelength,
        np.asarray(y, dtype=np.float64) / wavelength,
    )
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    tx, ty = px - ix, py - iy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    v00, v01 = uniform(seed, iy, ix), uniform(seed, iy, ix + 1)
    v10, v11 = uniform(seed, iy + 1, ix), uniform(seed, iy + 1, ix + 1)
    top = v00 * (1 - tx) + v01 * tx
    bottom = v10 * (1 - tx) + v11 * tx
    return np.asarray(top * (1 - ty) + bottom * ty, dtype=np.float64)
