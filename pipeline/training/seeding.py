"""Random streams derived from the run seed, so that a resumed run draws what a straight one does.

Nothing in a training run draws from a generator whose state depends on how the
run got to an epoch. At the start of every epoch each process seeds Python's,
NumPy's and torch's global generators (CUDA included) from ``(seed, epoch, rank)``:
dropout and anything else drawn in the training process. The data loaders have
generators of their own, seeded from ``(seed, epoch, rank)`` as well, from which
they draw their workers' base seed; a DataLoader never touches the global
generator. The training sampler draws each epoch's tiles and per-sample seeds
from ``(seed, epoch)``, and a worker seeds its global generators from the seed of
each sample it makes, so whatever a worker draws depends on neither the number
of workers nor which worker makes the sample. A run resumed at epoch ``k``
therefore draws exactly what an uninterrupted run draws from epoch ``k`` on.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

_GLOBAL, _LOADER = 0, 1  # stream kinds: a process's global generators, a loader's generator


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed drawn from ``seed`` and ``keys`` (epoch, rank, ...) by NumPy's SeedSequence.

    Args:
        seed: The run seed.
        *keys: Non-negative integers that name the stream.

    Returns:
        A seed in ``[0, 2**63)``; different keys give independent streams.
    """
    words = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def seed_globals(value: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (every CUDA device too)."""
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def seed_epoch(seed: int, epoch: int, rank: int, loaders: tuple[DataLoader[Any], ...]) -> None:
    """Seed this process's generators and its loaders' generators for ``epoch``.

    Args:
        seed: The run seed.
        epoch: The epoch about to start (1-based).
        rank: This process's rank.
        loaders: Loaders built with a generator of their own (see
            :func:`~terraseg.pipeline.training.components.make_loaders`).
    """
    seed_globals(derive_seed(seed, _GLOBAL, epoch, rank))
    for index, loader in enumerate(loaders):
        if loader.generator is not None:
            loader.generator.manual_seed(derive_seed(seed, _LOADER, index, epoch, rank))


def seed_worker_sample(sample_seed: int) -> None:
    """In a DataLoader worker, seed its global generators from the sample it is making.

    Does nothing in the training process itself, whose generators
    :func:`seed_epoch` owns.

    Args:
        sample_seed: The sample's seed, drawn by the sampler from ``(seed, epoch)``.
    """
    if get_worker_info() is not None:
        seed_globals(derive_seed(sample_seed))
