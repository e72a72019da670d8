"""Measurement helpers for benchmarks: wall time, peak memory of a process tree, a work folder."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def seconds(func: Callable[[], object]) -> float:
    """Wall time of one call of ``func``."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


@contextmanager
def bench_workdir(folder: Path | None) -> Iterator[Path]:
    """``folder`` (created when missing), or a temporary folder removed afterwards."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="terraseg-bench-") as name:
        yield Path(name)


class TreeRSS:
    """Samples the summed RSS of this process and all its descendants in a thread.

    Dask workers are grandchildren (nanny, then worker), so ``getrusage`` does not see
    them; the tree is walked on every sample instead. The root's own peak is kept
    apart: for terraseg it is the driver, which merges and writes.
    """

    def __init__(self, root: int | None = None, interval: float = 0.1) -> None:
        import psutil

        self._root = psutil.Process(root)
        self._interval = interval
        self._stop = threading.Event()
        self._sampling = threading.Lock()  # held by each sample, and while paused
        self.peak = 0
        self.root_peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            with self._sampling:
                total = 0
                with suppress(psutil.Error):
                    self.root_peak = max(self.root_peak, self._root.memory_info().rss)
                try:
                    tree = [self._root, *self._root.children(recursive=True)]
                except psutil.Error:  # a process ended while the tree was walked
                    tree = [self._root]
                for proc in tree:
                    with suppress(psutil.Error):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Take no samples inside the block (a child measured on its own runs there)."""
        with self._sampling:
            yield

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        """The largest sum seen, in MiB."""
        return self.peak / 2**20

    @property
    def root_peak_mib(self) -> float:
        """The root process's largest RSS, in MiB."""
        return self.root_peak / 2**20
