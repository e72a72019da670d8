"""Where a stage's tasks run: the executor interface every stage driver is written against.

A stage driver (tile, predict, vectorize) plans its work as tasks and hands them to
an :class:`Executor`. :class:`InProcessExecutor` runs each task at once in this
process (tests, small jobs, benchmarks); ``terraseg.workflows.executor.DaskExecutor`` runs
them on a Dask cluster. Both take the same calls, so the same driver decides what
is computed in both, and a fix lands once.

Task arguments may be handles returned by earlier ``submit`` calls of the same
executor: the executor passes the task's result in their place (Dask resolves them
on the workers, the in-process executor from its stored results).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Handle(Protocol):
    """A submitted task: a Dask future or an :class:`InProcessHandle`."""

    def result(self) -> Any:
        """The task's return value; raises the task's error."""

    def done(self) -> bool:
        """True once the task has finished, successfully or not."""


class Executor(Protocol):
    """Runs tasks; see the module docstring."""

    @property
    def threads(self) -> int:
        """Task threads available (1 in process)."""

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: str,
        resources: dict[str, float] | None = None,
    ) -> Handle:
        """Run ``fn(*args)`` as the task named ``key``; handles in ``args`` become results."""

    def wait_first(self, handles: Iterable[Handle]) -> set[Handle]:
        """Block until at least one of ``handles`` is done; return the done ones."""

    def error(self, handle: Handle) -> BaseException | None:
        """The error a done task raised, or ``None``, without moving its result."""

    def cancel(self, handles: Iterable[Handle]) -> None:
        """Stop tasks not yet run (a running task may still finish)."""


class InProcessHandle:
    """The outcome of a task run by :class:`InProcessExecutor`."""

    __slots__ = ("_error", "_value", "key")

    def __init__(self, key: str, value: Any = None, error: BaseException | None = None) -> None:
        self.key, self._value, self._error = key, value, error

    def result(self) -> Any:
        """The task's return value; raises the task's error."""
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        """Always true: the task ran when it was submitted."""
        return True


class InProcessExecutor:
    """Runs each task in this process at the moment it is submitted.

    A task whose argument is a failed handle fails with the same error without
    running, as on Dask.
    """

    threads = 1

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: str,
        resources: dict[str, float] | None = None,
    ) -> InProcessHandle:
        """Run ``fn`` now with handles replaced by their values."""
        try:
            values = [a.result() if isinstance(a, InProcessHandle) else a for a in args]
            return InProcessHandle(key, fn(*values))
        except Exception as exc:
            return InProcessHandle(key, error=exc)

    def wait_first(self, handles: Iterable[Handle]) -> set[Handle]:
        """Every handle: all are done."""
        return set(handles)

    def error(self, handle: Handle) -> BaseException | None:
        """The error the task raised, if any."""
        assert isinstance(handle, InProcessHandle)
        return handle._error

    def cancel(self, handles: Iterable[Handle]) -> None:
        """Nothing to stop: every task has run."""


def ordered_map(
    executor: Executor,
    fn: Callable[..., R],
    items: Sequence[T],
    *args: Any,
    key: Callable[[T], str],
    ahead: int,
) -> Iterator[R]:
    """Yield ``fn(item, *args)`` for each item, in order, at most ``ahead`` tasks in flight.

    Each task's handle is dropped as soon as its result is taken, so neither the
    executor nor the caller holds more than ``ahead`` results. Tasks still queued
    when the caller stops iterating are cancelled.
    """
    todo = iter(items)
    queue: deque[Handle] = deque(
        executor.submit(fn, item, *args, key=key(item)) for item in islice(todo, max(ahead, 1))
    )
    try:
        while queue:
            result: R = queue.popleft().result()
            queue.extend(
                executor.submit(fn, item, *args, key=key(item)) for item in islice(todo, 1)
            )
            yield result
    finally:
        if queue:
            executor.cancel(list(queue))
