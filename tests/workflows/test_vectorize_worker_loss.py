"""Vectorize on a real scheduler whose workers are killed mid-run (nannies restart them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from dask.distributed import Client

from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.driver import vectorize_rasters
from terraseg.pipeline.vectorize.rasters import read_raster_info
from terraseg.workflows.cli.main import cli
from tests.dask_processes import dask_cluster, kill
from tests.vectorize_data import blobs, gpkg_content, write_classmap

BIN = Path(sys.executable).parent


def _wait(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.fixture
def nanny_cluster(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and two `dask worker --nthreads 1` (each under a nanny) on 127.0.0.1."""
    with dask_cluster(tmp_path / "cluster") as address:
        yield address


def _worker_pids(client: Client) -> list[int]:
    """Process ids of the worker processes (the nannies' children) now connected."""
    pids = client.run(os.getpid, on_error="return").values()  # a dying worker gives an error
    return sorted(pid for pid in pids if isinstance(pid, int))


def _kill_workers(client: Client, run: subprocess.Popen[bytes], times: int) -> int:
    """SIGKILL a worker process ``times`` times while ``run`` runs; the kills done."""
    kills = 0
    for turn in range(times):
        _wait(lambda: len(_worker_pids(client)) == 2 or run.poll() is not None, "workers back")
        victim = _worker_pids(client)[turn % 2]
        if run.poll() is not None:
            break
        kill(victim)
        kills += 1
        _wait(lambda v=victim: v not in _worker_pids(client), "worker loss seen")
    return kills


def _refused_while_running(raster: Path, out: Path, address: str) -> str:
    """A second vectorize to the same GeoPackage: its one-line refusal."""
    args = ["-q", "vectorize", str(raster), "-o", str(out), "--scheduler", address]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    return result.output


@pytest.mark.parametrize(
    ("size", "times"),
    [
        pytest.param(240, 1, id="one-kill"),
        pytest.param(480, 3, id="three-kills", marks=pytest.mark.slow),
    ],
)
def test_killed_workers_give_the_same_geopackage_or_no_file(
    tmp_path: Path, nanny_cluster: str, size: int, times: int
) -> None:
    raster = write_classmap(tmp_path / "map.tif", blobs((size, size), 4, seed=8, scale=2.0))
    reference = tmp_path / "local.gpkg"
    config = VectorizeConfig(block_size=16, fill_holes=1.0)
    vectorize_rasters([read_raster_info(raster)], reference, config, InProcessExecutor())
    out = tmp_path / "out" / "remote.gpkg"
    command = [str(BIN / "terraseg"), "-q", "vectorize", str(raster), "-o", str(out)]
    command += ["--block-size", "16", "--fill-holes", "1", "--scheduler", nanny_cluster]
    started = time.monotonic()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with Client(nanny_cluster, timeout=60) as client:
            scratch = out.parent
            _wait(lambda: len(list(scratch.glob(".*.blocks/raster-0/*"))) >= 20, "blocks written")
            refusal = _refused_while_running(raster, out, nanny_cluster)
            kills = _kill_workers(client, run, times)
            output = run.communicate(timeout=300)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    seconds = time.monotonic() - started
    assert "another terraseg run" in refusal and refusal.strip().count("\n") == 0
    assert kills == times, f"the run ended after {seconds:.1f} s, before {times} kills"
    left = sorted(p.name for p in out.parent.iterdir())  # no scratch, lock or partial file
    if run.returncode == 0:
        assert gpkg_content(out) == gpkg_content(reference)
        assert left == ["remote.gpkg"]
    else:
        assert left == [], output
