"""Polygons in global pixel coordinates with per-polygon pixel statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

OUTSIDE = -1  # pseudo class of masked pixels while a block is simplified as a coverage

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
GeomArray = npt.NDArray[np.object_]


@dataclass
class Pieces:
    """Polygons in global pixel coordinates with per-polygon pixel statistics."""

    geoms: GeomArray
    class_ids: IntArray
    conf_sum: FloatArray
    conf_count: FloatArray

    def __len__(self) -> int:
        return len(self.geoms)

    def take(self, index: npt.ArrayLike) -> Pieces:
        """Return the subset at ``index`` (an index array or boolean mask)."""
        idx = np.asarray(index)
        return Pieces(
            self.geoms[idx], self.class_ids[idx], self.conf_sum[idx], self.conf_count[idx]
        )

    def with_geoms(self, geoms: GeomArray) -> Pieces:
        """The same pieces with new geometries (one per piece)."""
        return Pieces(geoms, self.class_ids, self.conf_sum, self.conf_count)

    @staticmethod
    def concat(parts: Sequence[Pieces]) -> Pieces:
        """All pieces of ``parts`` in order."""
        if not parts:
            return empty_pieces()
        return Pieces(
            np.concatenate([p.geoms for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            np.concatenate([p.conf_sum for p in parts]),
            np.concatenate([p.conf_count for p in parts]),
        )


def empty_pieces() -> Pieces:
    """No pieces."""
    return Pieces(np.empty(0, object), np.empty(0, np.int64), np.empty(0), np.empty(0))
