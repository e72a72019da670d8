"""Workers killed while ``terraseg tile`` runs on a real scheduler: same store, or a clear failure.

A ``dask scheduler`` and two ``dask worker`` processes (each a nanny that restarts
its worker process) run on 127.0.0.1; worker processes are killed with SIGKILL
while the run is under way. Dask recomputes what the lost workers held; the store
must then equal one tiled in this process, or the run must fail without a store
marked complete.
"""

import subprocess
import time
from pathlib import Path

import pytest

from tests.dask_processes import dask_cluster, kill, worker_pids
from tests.helpers import tiny_scenes
from tests.pipeline.tiling.stores import assert_same_store, is_complete, tile_command, tile_here


def wait_for_chunks(store: Path, run: subprocess.Popen[str]) -> None:
    """Return once the run has written a chunk (it is under way)."""
    deadline = time.monotonic() + 120
    while not any(store.glob("scenes/*/image/c/*/*/*")):
        assert run.poll() is None, "the run ended before writing a chunk"
        assert time.monotonic() < deadline, "no chunk written"
        time.sleep(0.02)


def kill_workers_while_running(
    run: subprocess.Popen[str], address: str, kills: int, pause: float
) -> int:
    """SIGKILL worker processes in turn while ``run`` goes on; return how many were killed."""
    killed = 0
    for index in range(kills):
        pids = worker_pids(address)
        if run.poll() is not None or not pids:
            break
        kill(sorted(pids)[index % len(pids)])
        killed += 1
        time.sleep(pause)
    return killed


def tile_losing_workers(tmp_path: Path, size: str, kills: int, pause: float) -> tuple[int, str]:
    """Tile one scene while killing workers; check the outcome; return exit status and stderr."""
    synth = tiny_scenes(tmp_path / "scenes", size=size, scenes=1, nodata="holes")
    reference = tmp_path / "reference.zarr"
    tile_here(reference, synth.scenes, synth.labels[0], synth.classes, tile_size=32)
    out = tmp_path / "remote.zarr"
    with dask_cluster(tmp_path / "cluster") as address:
        command = tile_command(
            synth.scenes, synth.labels[0], out, "--tile-size", "32", "--scheduler", address
        )
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_chunks(out, run)
            killed = kill_workers_while_running(run, address, kills, pause)
            _, stderr = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
    assert killed >= 2, "the run ended before two workers were killed"
    if run.returncode == 0:
        assert_same_store(out, reference)
        assert not list(out.rglob("*.tmp")), "chunk files of killed writes were left behind"
    else:  # a task lost too often (KilledWorker): allowed, but nothing is marked complete
        assert not is_complete(out), stderr
    return run.returncode, stderr


def test_killing_two_workers_mid_run_gives_the_local_store(tmp_path):
    tile_losing_workers(tmp_path, "512x512", kills=2, pause=0.2)


@pytest.mark.slow
def test_killing_workers_again_and_again_gives_the_local_store(tmp_path):
    tile_losing_workers(tmp_path, "1536x1536", kills=6, pause=1.5)
