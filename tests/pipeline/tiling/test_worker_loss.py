"""Workers killed while ``terraseg tile`` runs on a real scheduler: same store, or a clear failure.

A ``dask scheduler`` and two ``dask worker`` processes (each a nanny that restarts
its worker process) run on 127.0.0.1; worker processes are killed with SIGKILL
while the run is under way. Dask recomputes what the lost workers held; the store
must then equal one tiled in this process, or the run must fail without a store
marked complete.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dask.distributed import Client

from tests.helpers import tiny_scenes
from tests.pipeline.tiling.stores import assert_same_store, is_complete, tile_command, tile_here

BIN = Path(sys.executable).parent


def start_cluster(folder: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A scheduler and two nanny-managed workers of one thread each, on free ports."""
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    quiet = {"cwd": folder, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler_file = folder / "scheduler.json"
    processes = [
        subprocess.Popen(
            [
                *(str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"),
                *("--no-dashboard", "--scheduler-file", str(scheduler_file)),
            ],
            **quiet,
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() or not scheduler_file.stat().st_size:
        assert processes[0].poll() is None and time.monotonic() < deadline, "no scheduler"
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for index in range(2):
        processes.append(
            subprocess.Popen(
                [
                    *(str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1"),
                    *("--host", "127.0.0.1", "--no-dashboard", "--name", f"loss-{index}"),
                    *("--local-directory", str(folder / f"w{index}")),
                ],
                **quiet,
            )
        )
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    return address, processes


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_process(nanny: subprocess.Popen[bytes], timeout: float = 60) -> psutil.Process:
    """The worker process a nanny runs (waiting for the nanny to restart it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(nanny.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    raise TimeoutError("the nanny did not restart its worker")


def wait_for_chunks(store: Path, run: subprocess.Popen[str]) -> None:
    """Return once the run has written a chunk (it is under way)."""
    deadline = time.monotonic() + 120
    while not any(store.glob("scenes/*/image/c/*/*/*")):
        assert run.poll() is None, "the run ended before writing a chunk"
        assert time.monotonic() < deadline, "no chunk written"
        time.sleep(0.02)


def kill_workers_while_running(
    run: subprocess.Popen[str], nannies: list[subprocess.Popen[bytes]], kills: int, pause: float
) -> int:
    """SIGKILL worker processes in turn while ``run`` goes on; return how many were killed."""
    killed = 0
    for index in range(kills):
        worker = worker_process(nannies[index % len(nannies)])
        if run.poll() is not None:
            break
        worker.kill()
        killed += 1
        time.sleep(pause)
    return killed


def tile_losing_workers(tmp_path: Path, size: str, kills: int, pause: float) -> tuple[int, str]:
    """Tile one scene while killing workers; check the outcome; return exit status and stderr."""
    synth = tiny_scenes(tmp_path / "scenes", size=size, scenes=1, nodata="holes")
    reference = tmp_path / "reference.zarr"
    tile_here(reference, synth.scenes, synth.labels[0], synth.classes, tile_size=32)
    (tmp_path / "cluster").mkdir()
    address, processes = start_cluster(tmp_path / "cluster")
    out = tmp_path / "remote.zarr"
    command = tile_command(
        synth.scenes, synth.labels[0], out, "--tile-size", "32", "--scheduler", address
    )
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_chunks(out, run)
        killed = kill_workers_while_running(run, processes[1:], kills, pause)
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
        stop(processes)
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
