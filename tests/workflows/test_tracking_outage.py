"""A tracking server killed during training: training finishes, then `terraseg sync` logs the rest.

A real `mlflow server` on 127.0.0.1, reached through a URI with credentials (which the
reachability check must accept, and no message may show), is SIGKILLed once the first
epoch is done. Training goes on with one warning, writes its model and checkpoints, and
exits with status 3 and a last line saying the model is not registered and how to send
what waits. With the server back, `terraseg sync` sends it into the same MLflow run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli
from terraseg.workflows.tracking_fallback import PENDING_FILE, TRACKING_INCOMPLETE
from tests.conftest import _free_port
from tests.helpers import tiny_scenes

BIN = Path(sys.executable).parent
PASSWORD = "s3cret-pw"
NOT_REGISTERED = "model not registered: the tracking store stopped answering"
TRAIN = ["--width-multiplier", "0.25", "--members", "1", "--crop-size", "32", "--batch-size", "2",
         "--samples-per-epoch", "16", "--epochs", "3", "--num-workers", "0"]  # fmt: skip


class Server:
    """An `mlflow server` in a process group of its own, so that it can be killed whole."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://user:{PASSWORD}@127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(BIN / "mlflow"), "server", "--backend-store-uri",
                   f"sqlite:///{self.folder}/server.db", "--artifacts-destination",
                   str(self.folder / "artifacts"), "--workers", "1", "--host", "127.0.0.1",
                   "--port", str(self.port)]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=log, start_new_session=True
            )

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                assert self.process is not None and self.process.poll() is None, "server died"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its uvicorn worker
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("outage-server")
    running = Server(folder)
    running.start()  # boots while the store is tiled
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outage-data")
    scenes = tiny_scenes(root / "scenes", scenes=1)
    out = root / "data.zarr"
    args = ["-q", "tile", scenes.scenes[0], "--labels", scenes.labels[0], "--out", out,
            "--tile-size", "64", "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out


def train_killing_the_server(server: Server, store: Path, out: Path, name: str):
    """Run `terraseg train`; SIGKILL the server once epoch 1 is in metrics.jsonl."""
    command = [str(BIN / "terraseg"), "train", "--data", str(store), "--out", str(out),
               "--tracking-uri", server.uri, "--register", name, "--alias", "candidate",
               "--experiment", "outage", *TRAIN]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    training = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    metrics = out / "metrics.jsonl"
    while training.poll() is None and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    killed = time.monotonic()
    server.kill()
    stdout, stderr = training.communicate(timeout=300)
    return training.returncode, stdout, stderr, time.monotonic() - killed


@pytest.mark.slow  # a real server killed and restarted around a 3-epoch run: about 35 s
def test_training_outlives_its_tracking_server_and_sync_logs_the_rest(server, store, tmp_path):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run"
    server.wait()
    code, stdout, stderr, after_kill = train_killing_the_server(server, store, out, name)

    assert code == TRACKING_INCOMPLETE, stderr
    assert after_kill < 120, "the outage held training up"  # MLflow's default: minutes
    assert "Traceback" not in stderr and PASSWORD not in stderr + stdout
    assert stderr.count("stopped answering") == 2, stderr  # the warning, then the last line
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {out}: {NOT_REGISTERED} (Connection refused); "), last
    assert "epoch" in last and "the model" in last and f"terraseg sync {out}" in last
    summary = json.loads(stdout)
    assert summary["model_uri"] is None and summary["tracking"]["registered"] is False
    assert (out / "model" / "weights.pt").exists()
    assert (out / "checkpoints" / "last.pt").exists() and (out / "checkpoints" / "best.pt").exists()
    pending = [json.loads(line) for line in (out / PENDING_FILE).read_text().splitlines()]
    assert {"call": "model", "path": str(out / "model")} in pending
    assert any(e["call"] == "metrics" and e["step"] == 3 for e in pending)

    server.start()
    server.wait()
    result = CliRunner().invoke(cli, ["sync", str(out), "--tracking-uri", server.uri])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert not (out / PENDING_FILE).exists()
    import mlflow

    client = mlflow.MlflowClient(f"http://127.0.0.1:{server.port}")
    run_id = (out / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    epochs = [int(m.step) for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(set(epochs) - {4}) == [1, 2, 3]  # step 4: the headline, the best epoch's
    assert len(epochs) == len(set(epochs))  # each once
    version = client.get_model_version_by_alias(name, "candidate")
    assert version.run_id == run_id
    written = json.loads((out / "summary.json").read_text())
    assert written["model_uri"] == f"models:/{name}/{version.version}"
    assert "tracking" not in written
