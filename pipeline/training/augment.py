"""Augmentations of one crop, applied identically to image and label.

All randomness comes from a ``numpy.random.Generator`` seeded per sample, so a
crop is the same whichever DataLoader worker makes it (exact resume, DDP).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from terraseg.pipeline.training.config import AugmentConfig


def dihedral(image: Tensor, label: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """One of the 8 symmetries of the square: ``k % 4`` quarter turns, flipped when ``k >= 4``.

    Args:
        image: (bands, rows, cols).
        label: (rows, cols).
        k: 0..7.
    """
    image, label = torch.rot90(image, k % 4, (1, 2)), torch.rot90(label, k % 4, (0, 1))
    if k >= 4:
        image, label = torch.flip(image, (2,)), torch.flip(label, (1,))
    return image, label


def resize(image: Tensor, label: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Zoom a crop to ``size`` x ``size``: bilinear for the image, nearest for the label."""
    if image.shape[-2:] == (size, size):
        return image, label
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return image, label.to(torch.int64)


def photometric(image: Tensor, rng: np.random.Generator, config: AugmentConfig) -> Tensor:
    """Per-band gain ``1 ± contrast`` and shift ``± brightness`` of a normalized image."""
    bands = image.shape[0]
    gain = 1.0 + rng.uniform(-config.contrast, config.contrast, bands)
    shift = rng.uniform(-config.brightness, config.brightness, bands)
    as_tensor = torch.from_numpy
    return image * as_tensor(gain).float()[:, None, None] + as_tensor(shift).float()[:, None, None]


def crop_side(rng: np.random.Generator, crop: int, config: AugmentConfig) -> int:
    """Side of the source window that becomes a ``crop``-pixel crop at a random zoom."""
    scale = rng.uniform(config.scale_min, config.scale_max)
    return max(1, round(crop / scale))


def augment(
    image: Tensor, label: Tensor, rng: np.random.Generator, crop: int, config: AugmentConfig
) -> tuple[Tensor, Tensor]:
    """Zoom to ``crop``, a random dihedral symmetry, and photometric jitter."""
    image, label = resize(image, label, crop)
    if config.dihedral:
        image, label = dihedral(image, label, int(rng.integers(8)))
    return photometric(image, rng, config), label
