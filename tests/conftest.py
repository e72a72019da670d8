"""Shared fixtures: a real Dask cluster and real MLflow tracking stores on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent

# Most tests wait on processes (Dask workers, servers, the CLI), so the suite runs in
# pytest-xdist workers, one per core. Each worker starts its own LocalClusters of one
# process per core, so more than a few would only crowd a large machine.
MAX_TEST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers ``-n auto`` (the default, in pyproject.toml) starts."""
    return max(1, min(os.cpu_count() or 1, MAX_TEST_WORKERS))


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size == 0:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not written within {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def dask_scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a `dask scheduler` with two `dask worker` processes on 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = workdir / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        _wait_for_file(scheduler_file, scheduler)
        address = json.loads(scheduler_file.read_text())["address"]
        for index in range(2):
            workers.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"test-worker-{index}",
                        "--local-directory",
                        str(workdir / f"w{index}"),
                    ],
                    cwd=workdir,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            with Client(address, timeout=10) as client:
                client.shutdown()  # 2.5 s in all, where terminating each process took 8
            for process in [*workers, scheduler]:
                process.wait(timeout=20)
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(autouse=True)
def _mlflow_store_in_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Point MLflow's default at a temporary store: no test writes mlflow.db or mlruns here."""
    store = tmp_path_factory.getbasetemp() / "default-mlflow"
    store.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.5)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_server_boot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str] | None]:
    """Start `mlflow server` with the session when a test needs it, so it boots meanwhile."""
    users = {"mlflow_server_uri", "store_uri"}  # store_uri asks for it by name
    if not any(users & set(item.fixturenames) for item in request.session.items):
        yield None
        return
    workdir = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir}/server.db",
    ]
    command += ["--artifacts-destination", str(workdir / "artifacts"), "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def mlflow_server_uri(
    _mlflow_server_boot: tuple[subprocess.Popen[bytes], str] | None,
) -> str:
    """URI of a real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifact store)."""
    assert _mlflow_server_boot is not None
    server, uri = _mlflow_server_boot
    _wait_for_http(f"{uri}/health", server)
    return uri


@pytest.fixture(scope="session")
def mlflow_server_log(
    mlflow_server_uri: str, _mlflow_server_boot: tuple[subprocess.Popen[bytes], str] | None
) -> Path:
    """The log of the `mlflow server` of :func:`mlflow_server_uri`: a line per request."""
    assert _mlflow_server_boot is not None
    args = [str(arg) for arg in _mlflow_server_boot[0].args]
    backend = args[args.index("--backend-store-uri") + 1]
    return Path(backend.removeprefix("sqlite:///")).parent / "server.log"


@pytest.fixture(scope="session")
def sqlite_store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URI of an SQLite tracking store file, MLflow's default kind of store."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite')}/mlflow.db"


@pytest.fixture(scope="session", params=["sqlite", "server"])
def store_uri(request: pytest.FixtureRequest) -> str:
    """Each kind of tracking store in turn: an SQLite file, then a server."""
    fixture = {"sqlite": "sqlite_store_uri", "server": "mlflow_server_uri"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture(scope="session")
def trained(store_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two fake training runs registered as versions 1 and 2 of one model, alias on 2."""
    from terraseg.workflows.mlflow_tracking import start_tracking
    from tests.mlflow_helpers import Trained, fake_training, tiny_artifact

    workdir = tmp_path_factory.mktemp("trained")
    name = f"seg-{uuid.uuid4().hex[:8]}"
    result = Trained(
        store_uri, name, tiny_artifact(workdir / "reference", seed=1), workdir / "reference"
    )
    for seed in (0, 1):
        with start_tracking(
            store_uri, "tests", f"run-{seed}", register=name, alias="candidate"
        ) as tracker:
            result.model_uris.append(str(fake_training(tracker, workdir / f"run{seed}", seed=seed)))
            result.run_ids.append(tracker.run_id)
    return result
