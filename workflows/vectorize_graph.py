"""Dask orchestration of ``vectorize``: one task per block, results back in window order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dask.base import tokenize
from dask.distributed import Client

from pipeline.grid import Window
from pipeline.vectorize import BlockResult, RasterInfo, VectorizeConfig, polygonize_block
from pipeline.vectorize_file import BlockMapper, VectorizeSummary, vectorize_rasters
from workflows.cluster import gather_with_progress


def dask_block_mapper(client: Client, *, progress: bool = True) -> BlockMapper:
    """Make a block mapper that runs :func:`polygonize_block` as Dask tasks on ``client``."""

    def run(
        info: RasterInfo, windows: Sequence[Window], config: VectorizeConfig, workdir: str
    ) -> list[BlockResult]:
        token = tokenize(info, config, workdir)
        futures = [
            client.submit(
                polygonize_block,
                info,
                window,
                config,
                workdir,
                key=f"polygonize_block-{token}-{window.row_off}-{window.col_off}",
            )
            for window in windows
        ]
        label = f"vectorize {info.source}"
        return gather_with_progress(client, futures, desc=label, unit="block", enabled=progress)

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
