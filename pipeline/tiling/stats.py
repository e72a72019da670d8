"""Per-band statistics over valid pixels, computed from mergeable per-chunk summaries.

Integer imagery keeps an exact histogram per band, so percentiles equal
``numpy.percentile`` (linear interpolation) over all valid pixels. Float imagery
keeps a deterministic sample of each chunk instead, and its percentiles are
estimates from that sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

SAMPLE_PER_CHUNK = 4096


@dataclass
class BandSummary:
    """Mergeable sums of one or more chunks: counts, sums, squares, histogram or sample."""

    count: NDArray[np.int64]  # (bands,)
    total: NDArray[np.float64]  # (bands,)
    squares: NDArray[np.float64]  # (bands,)
    offset: int  # value of histogram bin 0
    histogram: NDArray[np.int64] | None  # (bands, bins) for integer data
    sample: NDArray[np.float64] | None  # (bands, n) for float data

    @classmethod
    def of(cls, image: NDArray[Any], valid: NDArray[np.bool_]) -> BandSummary:
        """Summarize the valid pixels of ``image`` (bands, rows, cols)."""
        flat = image.reshape(image.shape[0], -1)  # (bands, n)
        invalid = ~valid.ravel()
        n_invalid = int(np.count_nonzero(invalid))
        if np.issubdtype(image.dtype, np.integer):
            if n_invalid == 0:
                return cls._of_integers(flat, image.dtype)
            if n_invalid < invalid.size // 2:  # all pixels less the few invalid: no big copy
                whole = cls._of_integers(flat, image.dtype)
                return whole.minus(cls._of_integers(flat[:, invalid], image.dtype))
            return cls._of_integers(flat[:, ~invalid], image.dtype)
        values = flat if n_invalid == 0 else flat[:, ~invalid]
        as_float = values.astype(np.float64)
        step = max(1, values.shape[1] // SAMPLE_PER_CHUNK)
        return cls(
            count=np.full(values.shape[0], values.shape[1], dtype=np.int64),
            total=as_float.sum(axis=1),
            squares=(as_float * as_float).sum(axis=1),
            offset=0,
            histogram=None,
            sample=as_float[:, ::step],
        )

    @classmethod
    def _of_integers(cls, values: NDArray[Any], dtype: np.dtype[Any]) -> BandSummary:
        """A histogram per band; sums and sums of squares follow from it exactly."""
        info = np.iinfo(dtype)
        offset, bins = int(info.min), int(info.max) - int(info.min) + 1
        histogram = np.zeros((values.shape[0], bins), dtype=np.int64)
        for band, row in enumerate(values):
            shifted = row if offset == 0 else row.astype(np.int64) - offset
            histogram[band] = np.bincount(shifted, minlength=bins)
        levels = np.arange(bins, dtype=np.float64) + offset
        return cls(
            count=np.full(values.shape[0], values.shape[1], dtype=np.int64),
            total=histogram @ levels,
            squares=histogram @ (levels * levels),
            offset=offset,
            histogram=histogram,
            sample=None,
        )

    def minus(self, part: BandSummary) -> BandSummary:
        """The summary of these pixels without ``part`` (a histogram summary of a subset)."""
        assert self.histogram is not None and part.histogram is not None
        return BandSummary(
            count=self.count - part.count,
            total=self.total - part.total,
            squares=self.squares - part.squares,
            offset=self.offset,
            histogram=self.histogram - part.histogram,
            sample=None,
        )

    def merge(self, other: BandSummary) -> BandSummary:
        """The summary of both parts."""

        def add(a: NDArray[Any] | None, b: NDArray[Any] | None) -> NDArray[Any] | None:
            return None if a is None or b is None else a + b

        sample = None
        if self.sample is not None and other.sample is not None:
            sample = np.concatenate([self.sample, other.sample], axis=1)
        return BandSummary(
            self.count + other.count,
            self.total + other.total,
            self.squares + other.squares,
            self.offset,
            add(self.histogram, other.histogram),
            sample,
        )


def merge_all(summaries: list[BandSummary]) -> BandSummary:
    """Merge a list of summaries (at least one)."""
    result = summaries[0]
    for summary in summaries[1:]:
        result = result.merge(summary)
    return result


def band_statistics(summary: BandSummary, band_names: list[str]) -> list[dict[str, Any]]:
    """Mean, std, 2nd and 98th percentile and valid-pixel count per band."""
    out = []
    for band, name in enumerate(band_names):
        n = int(summary.count[band])
        mean = summary.total[band] / n if n else float("nan")
        variance = max(0.0, summary.squares[band] / n - mean * mean) if n else float("nan")
        p2, p98 = _percentiles(summary, band, (2.0, 98.0))
        out.append(
            {
                "band": name,
                "count": n,
                "mean": float(mean),
                "std": float(np.sqrt(variance)),
                "p2": p2,
                "p98": p98,
            }
        )
    return out


def _percentiles(summary: BandSummary, band: int, qs: tuple[float, ...]) -> list[float]:
    n = int(summary.count[band])
    if n == 0:
        return [float("nan")] * len(qs)
    if summary.histogram is None:
        assert summary.sample is not None
        return [float(v) for v in np.percentile(summary.sample[band], qs)]
    cumulative = np.cumsum(summary.histogram[band])
    results = []
    for q in qs:
        position = q / 100.0 * (n - 1)
        low, high = int(np.floor(position)), int(np.ceil(position))
        value_low = np.searchsorted(cumulative, low, side="right") + summary.offset
        value_high = np.searchsorted(cumulative, high, side="right") + summary.offset
        results.append(float(value_low + (position - low) * (value_high - value_low)))
    return results
