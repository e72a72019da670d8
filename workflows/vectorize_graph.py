"""Dask orchestration of ``vectorize``: one task per block, results streamed in window order.

Tasks are submitted a bounded distance ahead of the driver, which consumes their
results in window order and releases each future as soon as its result is taken, so
neither the workers nor the driver hold more than a few rows of blocks' results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from itertools import islice
from pathlib import Path

from dask.base import tokenize
from dask.distributed import Client, Future
from tqdm import tqdm

from pipeline.grid import Window
from pipeline.vectorize import BlockResult, RasterInfo, VectorizeConfig, polygonize_block
from pipeline.vectorize_file import BlockMapper, VectorizeSummary, vectorize_rasters


def dask_block_mapper(client: Client, *, progress: bool = True) -> BlockMapper:
    """Make a block mapper that runs :func:`polygonize_block` as Dask tasks on ``client``.

    At most two rows of blocks (and at least two tasks per worker thread) are
    submitted ahead of the result being consumed.
    """

    def run(
        info: RasterInfo, windows: Sequence[Window], config: VectorizeConfig, workdir: str
    ) -> Generator[BlockResult, None, None]:
        token = tokenize(info, config, workdir)
        per_row = sum(1 for w in windows if w.row_off == windows[0].row_off)
        ahead = max(2 * per_row, 2 * sum(client.nthreads().values()), 1)

        def submit(window: Window) -> Future[BlockResult]:
            key = f"polygonize_block-{token}-{window.row_off}-{window.col_off}"
            return client.submit(polygonize_block, info, window, config, workdir, key=key)

        todo = iter(windows)
        queue: deque[Future[BlockResult]] = deque(submit(w) for w in islice(todo, ahead))
        label = f"vectorize {info.source}"
        with tqdm(total=len(windows), desc=label, unit="block", disable=not progress) as bar:
            try:
                while queue:
                    result = queue.popleft().result()  # the future is released here
                    queue.extend(submit(w) for w in islice(todo, 1))
                    bar.update(1)
                    yield result
            finally:
                if queue:
                    client.cancel(list(queue))

    return run


def vectorize_on_cluster(
    client: Client,
    infos: Sequence[RasterInfo],
    out: str | Path,
    config: VectorizeConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> VectorizeSummary:
    """Vectorize ``infos`` into ``out`` with the block tasks running on ``client``.

    The scratch directory of block results sits next to ``out``; with a remote
    cluster it must be on a file system the workers share with this process, like
    the rasters themselves.
    """
    mapper = dask_block_mapper(client, progress=progress)
    return vectorize_rasters(infos, out, config, mapper, overwrite=overwrite)
