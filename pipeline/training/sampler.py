"""Samplers: training tiles weighted by their class histograms, validation tiles by rank."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import Sampler

SEED_MAX = 2**62


def class_frequencies(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Share of labelled pixels per class over tiles ``counts`` (tiles, classes)."""
    totals = counts.sum(axis=0).astype(np.float64)
    return np.asarray(totals / max(1.0, float(totals.sum())), dtype=np.float64)


def tile_weights(counts: NDArray[np.int64], balance: float) -> NDArray[np.float64]:
    """Drawing weight of each tile: the mean class weight of its labelled pixels.

    A class of frequency ``f`` weighs ``f ** -balance``: 0 draws tiles uniformly,
    1 draws each class's pixels about equally often, so rare classes are seen.
    Tiles without labelled pixels weigh 0.
    """
    freq = class_frequencies(counts)
    class_weight = np.where(freq > 0, np.power(np.maximum(freq, 1e-12), -balance), 0.0)
    labelled = counts.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(counts, labelled, out=np.zeros(counts.shape), where=labelled > 0)
    return np.asarray(share @ class_weight, dtype=np.float64)


class WeightedCropSampler(Sampler[tuple[int, int]]):
    """Draws ``(tile, sample_seed)`` pairs with replacement by tile weight, split over ranks.

    Every rank draws the same global sequence from ``(seed, epoch)`` and keeps every
    ``world``-th pair from ``rank``, so ranks see disjoint samples and the run is
    reproducible from the epoch number alone.

    Args:
        weights: Drawing weight per tile.
        total: Samples per epoch over all ranks (a multiple of ``world``).
        rank: This process's rank.
        world: Number of processes.
        seed: Run seed.
    """

    def __init__(
        self, weights: NDArray[np.float64], total: int, rank: int, world: int, seed: int
    ) -> None:
        self.probabilities = weights / weights.sum()
        self.total, self.rank, self.world, self.seed = total, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of ``epoch`` next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        tiles = rng.choice(len(self.probabilities), size=self.total, p=self.probabilities)
        seeds = rng.integers(0, SEED_MAX, size=self.total)
        for tile, seed in zip(
            tiles[self.rank :: self.world], seeds[self.rank :: self.world], strict=True
        ):
            yield int(tile), int(seed)


def rank_share(count: int, rank: int, world: int) -> list[int]:
    """Validation indices of ``rank``: every tile exactly once over all ranks, no padding."""
    return list(range(rank, count, world))
