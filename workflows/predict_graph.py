"""Running prediction over many rasters on a Dask cluster.

Blocks of all files are submitted in row-major order through a bounded
window, so a few blocks are read, inferred and written at any time whatever
the rasters' sizes. Each block's task returns its accumulators; small tasks
pick out the spill strips, so only those travel to the neighbouring blocks'
finishing tasks. A file's COGs are assembled on a worker while the next
file's blocks run. A file whose tasks fail is reported and cleaned up while
the others go on.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.base import tokenize
from dask.distributed import Client, Future
from tqdm import tqdm

from pipeline.files import remove_path
from pipeline.prediction.run import (
    FileJob,
    check_distinct_outputs,
    finish_block_and_write,
    finish_file,
    predict_block,
    start_file,
)

logger = logging.getLogger(__name__)


@dataclass
class FileOutcome:
    """What became of one input."""

    path: Path
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False


def _part(parts: Any, name: str) -> Any:
    return getattr(parts, name)


class _FileRun:
    """Submits one file's blocks and tracks their futures."""

    def __init__(self, client: Client, job: FileJob, resources: dict[str, float] | None) -> None:
        self.client, self.job, self.resources = client, job, resources
        self.token = tokenize(job.model, job.raster.source, job.tags, job.plan)
        self.spill: dict[tuple[int, int], dict[str, Future[Any]]] = {}  # strips not yet consumed
        # the scratch store is needed by the first write, not by the first inference
        self.started = client.submit(start_file, job, key=self.key("start", (0, 0)), pure=False)

    def key(self, kind: str, block: tuple[int, int]) -> str:
        """A deterministic task name."""
        return f"predict-{kind}-{self.job.raster.path.stem}-{block[0]}-{block[1]}-{self.token}"

    def submit_block(self, block: tuple[int, int]) -> Future[Any]:
        """Submit a block's inference and its finishing task; return the latter."""
        i, j = block
        parts = self.client.submit(
            predict_block,
            self.job,
            block,
            key=self.key("block", block),
            resources=self.resources,
            pure=False,
        )
        own = self.client.submit(_part, parts, "own", key=self.key("own", block), pure=False)
        self.spill[block] = {
            name: self.client.submit(_part, parts, name, key=self.key(name, block), pure=False)
            for name in ("right", "down", "diagonal")
        }
        left = self.spill.get((i, j - 1), {}).pop("right", None)
        up = self.spill.get((i - 1, j), {}).pop("down", None)
        up_left = self.spill.pop((i - 1, j - 1), {}).pop("diagonal", None)
        return self.client.submit(
            _finish_once_started,
            self.started,
            self.job,
            block,
            own,
            left,
            up,
            up_left,
            key=self.key("finish", block),
            pure=False,
        )


def _finish_once_started(started: None, *args: Any) -> int:
    """:func:`finish_block_and_write`, run after the file's scratch store exists."""
    return finish_block_and_write(*args)


def run_prediction(
    client: Client,
    jobs: list[FileJob],
    *,
    window: int | None = None,
    resources: dict[str, float] | None = None,
    progress: bool = True,
) -> list[FileOutcome]:
    """Predict every job's raster on ``client``'s cluster.

    Args:
        client: A connected Dask client.
        jobs: Planned files (see :func:`pipeline.prediction.run.plan_file`).
        window: Blocks in flight at once (default: 2 per worker thread, at least 4).
        resources: Dask resources each block task needs, e.g. ``{"GPU": 1}``.
        progress: Show a progress bar over pixels.

    Returns:
        One outcome per job, failed ones with their error message.
    """
    threads = sum(client.nthreads().values()) or 1
    window = window or max(4, 2 * threads)
    outcomes = {id(job): FileOutcome(job.raster.path) for job in jobs}
    total = sum(job.plan.shape[0] * job.plan.shape[1] for job in jobs)
    check_distinct_outputs(jobs)
    assembling: list[tuple[FileJob, Future[list[Path]]]] = []
    with tqdm(
        total=total,
        desc="predicting",
        unit="px",
        unit_scale=True,
        disable=not progress,
        leave=False,
    ) as bar:
        for job in jobs:
            try:
                _run_file(client, job, window, resources, bar)
            except Exception as exc:  # one bad file must not stop the others
                _failed(outcomes[id(job)], job, exc)
                continue
            # a file's COGs are assembled while the next file's blocks run
            assembling.append((job, client.submit(finish_file, job, pure=False)))
        for job, future in assembling:
            try:
                outcomes[id(job)].outputs = future.result()
            except Exception as exc:
                _failed(outcomes[id(job)], job, exc)
    return [outcomes[id(job)] for job in jobs]


def _failed(outcome: FileOutcome, job: FileJob, exc: Exception) -> None:
    """Record a file's failure and remove its scratch store."""
    logger.debug("prediction of %s failed", job.raster.path, exc_info=exc)
    outcome.error = str(exc)
    remove_path(job.paths.scratch)


def _run_file(
    client: Client, job: FileJob, window: int, resources: dict[str, float] | None, bar: tqdm
) -> None:
    run = _FileRun(client, job, resources)
    in_flight: deque[Future[int]] = deque()
    try:
        for block in job.plan.blocks:
            in_flight.append(run.submit_block(block))
            while len(in_flight) >= window:
                bar.update(in_flight.popleft().result())
        while in_flight:
            bar.update(in_flight.popleft().result())
    except BaseException:
        # stop the file's other tasks before its scratch store is removed
        spill = [future for parts in run.spill.values() for future in parts.values()]
        client.cancel([*in_flight, *spill, run.started])
        raise
