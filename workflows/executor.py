"""Running a stage's tasks on a Dask cluster: the Dask side of :mod:`terraseg.pipeline.executor`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dask.distributed import Client, Future, wait
from distributed.protocol import pickle

from terraseg.pipeline.executor import Handle


class DaskExecutor:
    """Submits tasks to ``client``'s cluster under deterministic keys."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def threads(self) -> int:
        """Task threads over all workers (at least 1)."""
        return sum(self.client.nthreads().values()) or 1

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: str,
        resources: dict[str, float] | None = None,
    ) -> Future[Any]:
        """Submit ``fn(*args)``; futures among ``args`` are resolved on the workers."""
        return self.client.submit(run_task, fn, *args, key=key, resources=resources, pure=False)

    def wait_first(self, handles: Iterable[Handle]) -> set[Handle]:
        """Block until one of ``handles`` is done; return every done one."""
        done, _ = wait(list(handles), return_when="FIRST_COMPLETED")
        return set(done)

    def error(self, handle: Handle) -> BaseException | None:
        """The task's error (fetched from the cluster) or ``None``."""
        assert isinstance(handle, Future)
        if handle.status == "error":
            return handle.exception()  # type: ignore[no-any-return]
        if handle.status == "cancelled":
            return RuntimeError(f"task {handle.key} was cancelled")
        return None

    def cancel(self, handles: Iterable[Handle]) -> None:
        """Cancel tasks that have not run."""
        futures = [h for h in handles if isinstance(h, Future)]
        if futures:
            self.client.cancel(futures)


def run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on a worker; an error leaves it as plain, picklable data.

    Dask pickles a task's error with its chain of causes. A cause from GDAL
    (rasterio's ``CPLE_*`` errors) cannot be unpickled, and Dask then replaces the
    whole error by a generic one naming neither its type nor its file. So the chain
    is cut here (the message of a terraseg error already says what went wrong), and
    an error that still cannot travel is replaced by one holding its type and message.
    """
    try:
        return fn(*args)
    except Exception as exc:
        error = portable_error(exc)
    raise error


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` without its causes, or a RuntimeError naming it if it cannot be pickled."""
    exc.__cause__ = exc.__context__ = None
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
