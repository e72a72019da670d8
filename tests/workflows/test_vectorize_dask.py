from __future__ import annotations

import time
from pathlib import Path

from dask.distributed import Client

from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.vectorize.blocks import block_plan
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.driver import block_results
from terraseg.pipeline.vectorize.rasters import read_raster_info
from terraseg.workflows.executor import DaskExecutor
from tests.vectorize_data import blobs, write_classmap


def test_block_results_stream_in_order_with_few_futures_held(
    tmp_path: Path, dask_scheduler_address: str
) -> None:
    info = read_raster_info(write_classmap(tmp_path / "b.tif", blobs((100, 120), 3, seed=2)))
    config = VectorizeConfig(block_size=16)
    windows = block_plan(info, config)  # 7 rows of 8 blocks
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = list(block_results(InProcessExecutor(), info, windows, config, str(tmp_path / "local")))
    with Client(dask_scheduler_address) as client:
        held = []
        results = []
        executor = DaskExecutor(client)
        for result in block_results(executor, info, windows, config, str(tmp_path / "dask")):
            held.append(len(client.futures))
            results.append(result)
        # Two rows of blocks ahead, not the whole raster (+1: releases are asynchronous).
        assert max(held) <= 2 * 8 + 1
        deadline = time.monotonic() + 10
        while client.futures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.futures  # every future released once its result was taken
    assert [r.window for r in results] == windows
    for ours, theirs in zip(results, local, strict=True):
        assert ours.final_count == theirs.final_count
        assert list(ours.edges.geoms) == list(theirs.edges.geoms)
