"""Dask cluster connection: a LocalCluster by default, an existing scheduler on request."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dask.config
from dask.distributed import Client, Future, LocalCluster, as_completed
from tqdm import tqdm

logger = logging.getLogger(__name__)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | None = "auto",
    tune_malloc: bool = True,
    resources: dict[str, float] | None = None,
) -> Iterator[Client]:
    """Connect to ``scheduler`` or start a LocalCluster for the duration of the block.

    Args:
        scheduler: Address of a running scheduler (``tcp://host:8786``); when
            ``None``, ``DASK_SCHEDULER_ADDRESS`` is used, and when that is unset
            too a LocalCluster of worker processes is started.
        workers: LocalCluster worker processes (default: one per core).
        threads_per_worker: Threads in each LocalCluster worker.
        memory_limit: Per-worker memory limit of the LocalCluster.
        tune_malloc: Start LocalCluster workers with :data:`WORKER_GLIBC_TUNABLES`
            (unless the variable is already set); False starts them without it.
        resources: Dask resources each LocalCluster worker declares (e.g.
            ``{"GPU": 1}``), so that tasks asking for them can run.

    Yields:
        A connected client; the LocalCluster is shut down on exit.
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    # distributed logs its lifecycle at INFO, and a failed run's tear-down (a task's
    # error, clients leaving) at ERROR: terraseg reports the failure itself in one
    # line, so Dask's logs reach stderr only when terraseg is verbose.
    _set_dask_log_level(logging.INFO if verbose else logging.CRITICAL + 1)
    if not verbose:  # the in-process scheduler's handlers log their tear-down errors here
        logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    if address:
        logger.info("connecting to Dask scheduler %s", address)
        with Client(address) as client:
            yield client
        return
    n_workers = workers or os.cpu_count() or 1
    with (
        dask.config.set(LOCAL_CLUSTER_CONFIG),
        worker_environment(tune_malloc),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
            # the scheduler's HTTP endpoint on any free port: never clash with another cluster
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0", "dashboard": False},
            memory_limit=memory_limit,
            resources=resources,
            # a task's failure is reported by terraseg, in one line: Dask's own "Compute
            # Failed" log of it is kept off stderr unless terraseg is verbose
            silence_logs=logging.ERROR if verbose else logging.CRITICAL + 1,
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("started LocalCluster with %d workers", n_workers)
        yield client


def _set_dask_log_level(level: int) -> None:
    """Set the level of distributed's loggers, children included.

    Dask's configuration gives some children a level of their own (``distributed.client``
    among them), which a level set on ``distributed`` alone would not reach.
    """
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith("distributed.")]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(level)


# A LocalCluster runs without a dashboard, so nothing reads its workers' statistical
# profiles (a stack sample of every thread each 10 ms), and the event-loop health
# check needs no 20 ms tick. Both cost CPU beside the tasks: an idle cluster of one
# worker used 0.58-0.70 s of CPU per 10 s with them and 0.21-0.22 s without (a
# predict run on 2 cores gives that CPU back to the model).
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
}

# Every raster block is read once per stage, so GDAL's block cache (5% of RAM per
# process by default) would only fill; worker processes get a small one.
WORKER_GDAL_CACHEMAX_MB = 128

# Tasks allocate and free buffers of megabytes (raster windows, activations), and
# glibc's default malloc returns them to the kernel at once, so every task pays
# page faults again: a third of CPU inference time and of tiling time. Higher mmap
# and trim thresholds keep them in the heap; worker threads would each get an
# arena whose heaps are unmapped as soon as they empty, so one arena serves all.
WORKER_GLIBC_TUNABLES = ":".join(
    [
        "glibc.malloc.mmap_threshold=33554432",
        "glibc.malloc.trim_threshold=4294967296",
        "glibc.malloc.arena_max=1",
    ]
)


@contextmanager
def worker_environment(tune_malloc: bool = True) -> Iterator[None]:
    """Environment for LocalCluster worker processes started inside the block.

    Caps GDAL's block cache and applies :data:`WORKER_GLIBC_TUNABLES`; values the
    user has set are kept. The whole previous environment is restored on exit:
    Dask's nanny writes its ``pre-spawn-environ`` (``OMP_NUM_THREADS=1`` among
    others) into this process's environment before starting a worker, and
    anything this process starts after the cluster (a training process) must not
    inherit it. Only what differs is put back, so the environment is never empty
    for another thread.
    """
    saved = os.environ.copy()
    os.environ.setdefault("GDAL_CACHEMAX", str(WORKER_GDAL_CACHEMAX_MB))
    if tune_malloc:
        os.environ.setdefault("GLIBC_TUNABLES", WORKER_GLIBC_TUNABLES)
    else:
        os.environ.pop("GLIBC_TUNABLES", None)
    try:
        yield
    finally:
        for name in os.environ.keys() - saved.keys():
            del os.environ[name]
        os.environ.update(saved)


def gather_with_progress(
    client: Client,
    futures: Iterable[Future[Any]],
    *,
    desc: str,
    unit: str = "task",
    enabled: bool = True,
) -> list[Any]:
    """Wait for ``futures`` with a progress bar; return results in submission order.

    The first failing future's exception is raised after the others are cancelled.
    """
    futures = list(futures)
    with tqdm(total=len(futures), desc=desc, unit=unit, disable=not enabled, leave=False) as bar:
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
    return [future.result() for future in futures]
