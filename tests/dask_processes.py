"""A real `dask scheduler` with nanny-managed `dask worker` processes, for fault tests.

Tests that kill workers get a cluster of their own (the session's shared cluster
in conftest serves the others). Workers run under nannies, so a worker process
killed with SIGKILL is restarted, and Dask recomputes what it held.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

BIN = Path(sys.executable).parent


@contextmanager
def dask_cluster(workdir: Path, workers: int = 2) -> Iterator[str]:
    """Start a scheduler and ``workers`` nanny workers of one thread on 127.0.0.1."""
    from dask.distributed import Client

    workdir.mkdir(parents=True, exist_ok=True)
    scheduler_file = workdir / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    quiet = {"cwd": workdir, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        **quiet,
    )  # fmt: skip
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.stat().st_size:
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for index in range(workers):
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nanny",
                        "--no-dashboard",
                        "--local-directory",
                        str(workdir / f"w{index}"),
                    ],
                    **quiet,
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for group in (processes[1:], processes[:1]):  # workers first: no rescheduling chatter
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def worker_pids(address: str, holding: Callable[[str], bool] | None = None) -> list[int]:
    """Pids of the worker processes; with ``holding``, of those holding a matching key."""
    from dask.distributed import Client

    with Client(address, timeout=30) as client:
        pids = client.run(os.getpid)  # worker address -> pid
        if holding is None:
            return [int(pid) for pid in pids.values()]
        held = client.run_on_scheduler(_keys_by_worker)
    return [int(pids[w]) for w, keys in held.items() if w in pids and any(holding(k) for k in keys)]


def _keys_by_worker(dask_scheduler: object) -> dict[str, list[str]]:
    """On the scheduler: the keys of results each worker holds or runs."""
    state = dask_scheduler.workers  # type: ignore[attr-defined]
    return {
        address: [str(t.key) for t in (*ws.has_what, *ws.processing)]
        for address, ws in state.items()
    }


def kill(pid: int) -> None:
    """SIGKILL a worker process (its nanny starts a new one)."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
