"""Measurement helpers for benchmarks: wall time and peak resident memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Seconds a call took."""

    seconds: float


def timed(func: Callable[[], T]) -> tuple[T, Timing]:
    """Run ``func`` and return its result with the wall time it took."""
    start = time.perf_counter()
    result = func()
    return result, Timing(time.perf_counter() - start)


def peak_rss_mib(include_children: bool = True) -> float:
    """Peak resident set size of this process (and its waited-for children) in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / 1024.0
