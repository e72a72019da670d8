"""Running prediction over many rasters on a Dask cluster.

Blocks of all files are submitted in row-major order through a bounded
window, so a few blocks are read, inferred and written at any time whatever
the rasters' sizes. Each block's task returns its accumulators, which the
block's finishing task completes; two small tasks pick out the spill strips
(into the right neighbour, and into the next block row), so only those wait
in memory for the neighbouring blocks' finishing tasks. A file's COGs are
assembled on a worker while the next file's blocks run. A file whose tasks
fail is reported and cleaned up while the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.base import tokenize
from dask.distributed import Client, Future, wait
from tqdm import tqdm

from pipeline.files import remove_path
from pipeline.prediction.blocks import Accumulator, BlockParts
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


def _right(parts: BlockParts) -> Accumulator | None:
    """A block's spill into its right neighbour."""
    return parts.right


def _below(parts: BlockParts) -> tuple[Accumulator | None, Accumulator | None]:
    """A block's spill into the next block row: below and diagonally below-right."""
    return parts.down, parts.diagonal


class _FileRun:
    """Submits one file's blocks and tracks their futures."""

    def __init__(self, client: Client, job: FileJob, resources: dict[str, float] | None) -> None:
        self.client, self.job, self.resources = client, job, resources
        self.token = tokenize(job.model, job.raster.source, job.tags, job.plan)
        self.spill: dict[tuple[int, int], dict[str, Future[Any]]] = {}  # strips not yet consumed
        self.finishing: set[Future[int]] = set()  # blocks submitted, not yet written
        self.blocks_left = len(job.plan.blocks)  # blocks not yet submitted
        self.assembled: Future[list[Path]] | None = None
        self.outcome = FileOutcome(job.raster.path)
        # the scratch store is needed by the first write, not by the first inference
        self.started = client.submit(start_file, job, key=self.key("start", (0, 0)), pure=False)

    def key(self, kind: str, block: tuple[int, int]) -> str:
        """A deterministic task name."""
        return f"predict-{kind}-{self.job.raster.path.stem}-{block[0]}-{block[1]}-{self.token}"

    def submit_block(self, block: tuple[int, int]) -> Future[int]:
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
        self.spill[block] = {
            "right": self.client.submit(_right, parts, key=self.key("right", block), pure=False),
            "below": self.client.submit(_below, parts, key=self.key("below", block), pure=False),
        }
        left = self.spill.get((i, j - 1), {}).pop("right", None)
        # the upper block's strips below serve this block and, diagonally, the next one:
        # the next one releases them, or this one in the last column
        last_column = j == self.job.plan.cols.count - 1
        above = self.spill.pop((i - 1, j), {}) if last_column else self.spill.get((i - 1, j), {})
        up = above.get("below")
        up_left = self.spill.pop((i - 1, j - 1), {}).get("below")
        finished: Future[int] = self.client.submit(
            _finish_once_started,
            self.started,
            self.job,
            block,
            parts,
            left,
            up,
            up_left,
            key=self.key("finish", block),
            pure=False,
        )
        self.finishing.add(finished)
        self.blocks_left -= 1
        return finished

    def block_done(self, finished: Future[int]) -> int:
        """Collect a finished block (raising its error); assemble the COGs after the last."""
        pixels = finished.result()
        self.finishing.discard(finished)
        if not self.blocks_left and not self.finishing:
            # assembled on a worker while the next file's blocks run
            self.assembled = self.client.submit(finish_file, self.job, pure=False)
        return pixels

    def fail(self, exc: BaseException, *, interrupted: bool = False) -> None:
        """Stop the file's other tasks, then record its error and remove its scratch store.

        The store is removed only once the task creating it is done, so that it
        cannot come back after the removal (a running task is not stopped by
        cancelling it). An interrupted run does not wait: its next run starts
        from a fresh store anyway.
        """
        spill = [future for parts in self.spill.values() for future in parts.values()]
        self.client.cancel([*self.finishing, *spill, *([self.started] if interrupted else [])])
        if not interrupted:
            wait([self.started])
        self.blocks_left, self.finishing = 0, set()
        logger.debug("prediction of %s failed", self.job.raster.path, exc_info=exc)
        self.outcome.error = str(exc)
        remove_path(self.job.paths.scratch)


def _finish_once_started(
    started: None,
    job: FileJob,
    block: tuple[int, int],
    parts: BlockParts,
    left: Accumulator | None,
    up: tuple[Accumulator | None, Accumulator | None] | None,
    up_left: tuple[Accumulator | None, Accumulator | None] | None,
) -> int:
    """:func:`finish_block_and_write`, run after the file's scratch store exists.

    ``up`` and ``up_left`` are the upper and upper-left blocks' spill into this
    block row (below, diagonal): this block takes the first and the second.
    """
    return finish_block_and_write(
        job, block, parts.own, left, up[0] if up else None, up_left[1] if up_left else None
    )


def run_prediction(
    client: Client,
    jobs: list[FileJob],
    *,
    window: int | None = None,
    resources: dict[str, float] | None = None,
    progress: bool = True,
) -> list[FileOutcome]:
    """Predict every job's raster on ``client``'s cluster.

    Blocks of all files go through one window, so the next file's blocks start
    while the last ones of a file run: the workers do not wait for a file's
    tail.

    Args:
        client: A connected Dask client.
        jobs: Planned files (see :func:`pipeline.prediction.run.plan_file`).
        window: Blocks in flight at once, from submission until written (default: 4
            per worker thread, at least 8). A block's finishing task waits for its
            left and upper neighbours, so up to a thread's worth of blocks are done
            but not yet written at any time; at 2 per thread the workers ran out of
            queued blocks at every block row and waited for the client to submit more.
        resources: Dask resources each block task needs, e.g. ``{"GPU": 1}``.
        progress: Show a progress bar over pixels.

    Returns:
        One outcome per job, failed ones with their error message.
    """
    threads = sum(client.nthreads().values()) or 1
    window = window or max(8, 4 * threads)
    total = sum(job.plan.shape[0] * job.plan.shape[1] for job in jobs)
    check_distinct_outputs(jobs)
    runs: list[_FileRun] = []
    in_flight: dict[Future[int], _FileRun] = {}  # finishing tasks in submission order
    with tqdm(
        total=total,
        desc="predicting",
        unit="px",
        unit_scale=True,
        disable=not progress,
        leave=False,
    ) as bar:

        def settle_first_done() -> None:
            # whichever block is done first frees its place: a long block does not
            # hold back the next submissions while a worker thread waits
            for finished, run in list(in_flight.items()):
                if run.outcome.error is not None:  # failed: its blocks were cancelled
                    del in_flight[finished]
            if not in_flight:
                return
            done, _ = wait(list(in_flight), return_when="FIRST_COMPLETED")
            for finished in [f for f in in_flight if f in done]:
                run = in_flight.pop(finished)
                if run.outcome.error is not None:  # failed while settling another block
                    continue
                try:
                    bar.update(run.block_done(finished))
                except Exception as exc:  # one bad file must not stop the others
                    run.fail(exc)

        try:
            for job in jobs:
                run = _FileRun(client, job, resources)
                runs.append(run)
                for block in job.plan.blocks:
                    if run.outcome.error is not None:
                        break
                    try:
                        in_flight[run.submit_block(block)] = run
                    except Exception as exc:
                        run.fail(exc)
                    while len(in_flight) >= window:
                        settle_first_done()
            while in_flight:
                settle_first_done()
        except BaseException:
            # stop every file's tasks before the scratch stores are removed
            for run in runs:
                if run.outcome.error is None and run.assembled is None:
                    run.fail(RuntimeError("prediction was interrupted"), interrupted=True)
            raise
        for run in runs:
            if run.assembled is None:
                continue
            try:
                run.outcome.outputs = run.assembled.result()
            except Exception as exc:
                run.fail(exc)
    return [run.outcome for run in runs]
