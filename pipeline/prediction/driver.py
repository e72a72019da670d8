"""The one driver of ``terraseg predict``: block graphs of many rasters through one executor.

For each raster the driver takes the output's lock, skips it when its outputs are
current, and otherwise submits its block graph (:mod:`terraseg.pipeline.prediction.graph`)
node by node in row-major order through a bounded window of blocks in flight, so
the next raster's blocks start while a raster's last ones run. A node's result is
dropped once the last node that needs it is submitted. When every block of a
raster is stored, its COGs are assembled as one more task, after a check that the
scratch store holds every block of the plan written by this run. A raster whose
tasks fail is reported and cleaned up while the others go on.

The same driver runs in one process (:class:`terraseg.pipeline.executor.InProcessExecutor`)
and on a Dask cluster (``terraseg.workflows.executor.DaskExecutor``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terraseg.pipeline.errors import file_system_error
from terraseg.pipeline.executor import Executor, Handle
from terraseg.pipeline.files import remove_path
from terraseg.pipeline.locks import output_lock
from terraseg.pipeline.prediction.blocks import below_spill, right_spill
from terraseg.pipeline.prediction.graph import Node, NodeId, NodeKind, Slot, block_graph, last_uses
from terraseg.pipeline.prediction.job import FileJob, check_distinct_outputs, needs_work
from terraseg.pipeline.prediction.outputs import publish
from terraseg.pipeline.prediction.tasks import (
    assemble_file,
    infer_block,
    read_block,
    start_file,
    write_block_interior,
)

logger = logging.getLogger(__name__)

TASKS: dict[NodeKind, Callable[..., Any]] = {
    "start": start_file,
    "read": read_block,
    "infer": infer_block,
    "right": right_spill,
    "below": below_spill,
    "write": write_block_interior,
}
Progress = Callable[[int], None]  # called with the pixels of each block written


@dataclass
class FileOutcome:
    """What became of one input."""

    path: Path
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False


def predict_files(
    jobs: Sequence[FileJob],
    executor: Executor,
    *,
    window: int | None = None,
    resources: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> list[FileOutcome]:
    """Predict every job's raster; return one outcome per job, in order.

    Args:
        jobs: Planned files (see :func:`terraseg.pipeline.prediction.job.plan_file`).
        executor: Where the tasks run.
        window: Blocks in flight at once, from submission until written (default:
            4 per task thread, at least 8; at 2 per thread the workers ran out of
            queued blocks at every block row).
        resources: Executor resources each inference task needs, e.g. ``{"GPU": 1}``.
        progress: Called with the pixels of every block written.

    Raises:
        InputError: Two jobs would write the same output.
        LockedError: Another live run is writing one of the outputs.
    """
    check_distinct_outputs(list(jobs))
    with ExitStack() as locks:
        for job in jobs:
            locks.enter_context(output_lock(job.paths.classes, job.run_id))
        todo = [job for job in jobs if needs_work(job)]
        for job in todo:
            for stale in job.paths.stale_scratch():  # left by a dead run: we hold the lock
                remove_path(stale)
        done = {
            id(run.job): run.outcome for run in _run(executor, todo, window, resources, progress)
        }
    skipped = {
        id(job): FileOutcome(job.raster.path, job.paths.published(), skipped=True) for job in jobs
    }
    return [done.get(id(job), skipped[id(job)]) for job in jobs]


class FileRun:
    """One raster's block graph in flight: submits its nodes and collects its blocks."""

    def __init__(self, executor: Executor, job: FileJob, resources: dict[str, float] | None):
        self.executor, self.job, self.resources = executor, job, resources
        self.nodes = block_graph(job.plan.rows.count, job.plan.cols.count)
        self.last_use = last_uses(self.nodes)
        self.position = 0  # next node to submit
        self.live: dict[NodeId, Handle] = {}  # results some later node still needs
        self.writing: set[Handle] = set()  # blocks submitted, not yet seen written
        self.assembled: Handle | None = None
        self.outcome = FileOutcome(job.raster.path)

    @property
    def failed(self) -> bool:
        """True once a task of the file failed."""
        return self.outcome.error is not None

    @property
    def submitted_all(self) -> bool:
        """True once every node of the graph is submitted."""
        return self.position == len(self.nodes)

    def submit_next_block(self) -> Handle:
        """Submit nodes up to and including the next block's ``write``; return its handle."""
        while True:
            node = self.nodes[self.position]
            handle = self._submit(node)
            self.position += 1
            if node.kind == "write":
                self.writing.add(handle)
                return handle

    def _submit(self, node: Node) -> Handle:
        args = [self._argument(arg, node) for arg in node.args]
        job = self.job
        handle = self.executor.submit(
            TASKS[node.kind],
            *args,
            key=f"predict-{node.kind}-{job.raster.path.stem}-{node.block[0]}-{node.block[1]}-"
            f"{job.run_id}",
            resources=self.resources if node.kind == "infer" else None,
        )
        if node.id in self.last_use:
            self.live[node.id] = handle
        for dep in node.deps:
            if self.last_use[dep] == self.position:
                del self.live[dep]  # no later node needs it: its result can go
        return handle

    def _argument(self, arg: NodeId | Slot | None, node: Node) -> Any:
        if arg is Slot.JOB:
            return self.job
        if arg is Slot.BLOCK:
            return node.block
        return None if arg is None else self.live[arg]

    def block_written(self, handle: Handle) -> int:
        """Collect a done ``write``; assemble after the last block. Return its pixels."""
        self.writing.discard(handle)
        error = self.executor.error(handle)
        if error is not None:
            self.fail(error)
            return 0
        pixels: int = handle.result()
        if self.submitted_all and not self.writing:
            self.assembled = self.executor.submit(
                assemble_file,
                self.job,
                key=f"predict-assemble-{self.job.raster.path.stem}-{self.job.run_id}",
            )
        return pixels

    def collect(self) -> None:
        """Take the assembled outputs (or the error that stopped them)."""
        if self.assembled is None or self.failed:
            return
        try:
            self.outcome.outputs = self.assembled.result()
            if self.job.paths.remote is not None:  # committed here: now to the bucket
                self.outcome.outputs = publish(self.job.paths)
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc: BaseException, *, interrupted: bool = False) -> None:
        """Stop the file's other tasks, record its error and remove its scratch store.

        Unless interrupted, the store is removed once the task creating it is
        done, so that it cannot come back after the removal.
        """
        start = self.live.get(("start", 0, 0))
        self.executor.cancel([h for h in (*self.live.values(), *self.writing) if h is not start])
        if interrupted and start is not None:
            self.executor.cancel([start])
        elif start is not None and not start.done():
            self.executor.wait_first([start])
        self.live, self.writing, self.position = {}, set(), len(self.nodes)
        logger.debug("prediction of %s failed", self.job.raster.path, exc_info=exc)
        self.outcome.error = str(_reported(exc, self.job.paths.classes))
        remove_path(self.job.paths.scratch)


def _reported(exc: BaseException, output: Path) -> BaseException:
    """``exc``, or a file-system error (full disk, read-only) as one line naming the file."""
    if isinstance(exc, OSError):
        return file_system_error(exc, output) or exc
    return exc


def _run(
    executor: Executor,
    jobs: Sequence[FileJob],
    window: int | None,
    resources: dict[str, float] | None,
    progress: Progress | None,
) -> list[FileRun]:
    """Run the block graphs of ``jobs`` through one window of blocks in flight."""
    window = window or max(8, 4 * executor.threads)
    runs: list[FileRun] = []
    writing: dict[Handle, FileRun] = {}
    try:
        for job in jobs:
            run = FileRun(executor, job, resources)
            runs.append(run)
            while not run.submitted_all:
                writing[run.submit_next_block()] = run
                while len(writing) >= window:
                    _settle(executor, writing, progress)
        while writing:
            _settle(executor, writing, progress)
    except BaseException:
        for run in runs:  # stop every file's tasks before the scratch stores go
            if not run.failed and run.assembled is None:
                run.fail(RuntimeError("prediction was interrupted"), interrupted=True)
        raise
    for run in runs:
        run.collect()
    return runs


def _settle(executor: Executor, writing: dict[Handle, FileRun], progress: Progress | None) -> None:
    """Wait for the first blocks written (any file's) and collect them."""
    for handle, run in list(writing.items()):
        if run.failed:  # its blocks were cancelled
            del writing[handle]
    if not writing:
        return
    for handle in executor.wait_first(list(writing)):
        run = writing.pop(handle)
        if run.failed:
            continue
        pixels = run.block_written(handle)
        if progress is not None and pixels:
            progress(pixels)
