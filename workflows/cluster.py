"""Dask cluster connection: a LocalCluster by default, an existing scheduler on request."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

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
) -> Iterator[Client]:
    """Connect to ``scheduler`` or start a LocalCluster for the duration of the block.

    Args:
        scheduler: Address of a running scheduler (``tcp://host:8786``); when
            ``None``, ``DASK_SCHEDULER_ADDRESS`` is used, and when that is unset
            too a LocalCluster of worker processes is started.
        workers: LocalCluster worker processes (default: one per core).
        threads_per_worker: Threads in each LocalCluster worker.
        memory_limit: Per-worker memory limit of the LocalCluster.

    Yields:
        A connected client; the LocalCluster is shut down on exit.
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    # distributed logs its lifecycle at INFO; show it only when terraseg is verbose.
    logging.getLogger("distributed").setLevel(
        max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    )
    if address:
        logger.info("connecting to Dask scheduler %s", address)
        with Client(address) as client:
            yield client
        return
    n_workers = workers or os.cpu_count() or 1
    limit_worker_gdal_cache()
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
            # the scheduler's HTTP endpoint on any free port: never clash with another cluster
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0", "dashboard": False},
            memory_limit=memory_limit,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("started LocalCluster with %d workers", n_workers)
        yield client


# Every raster block is read once per stage, so GDAL's block cache (5% of RAM per
# process by default) would only fill; worker processes get a small one.
WORKER_GDAL_CACHEMAX_MB = 128


def limit_worker_gdal_cache() -> None:
    """Cap GDAL's block cache of LocalCluster workers started after this call."""
    os.environ.setdefault("GDAL_CACHEMAX", str(WORKER_GDAL_CACHEMAX_MB))


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
