"""Exact resume: a run stopped after a checkpoint and resumed equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner

from terraseg.pipeline.training.checkpoint import load_checkpoint
from terraseg.workflows.cli.main import cli

BIN = Path(sys.executable).parent
TIMINGS = {"train/images_per_s", "train/data_wait", "train/seconds"}  # wall-clock, not results
RESUMABLE = {
    "model": {"backbone": "mobilenetv2", "width_multiplier": 0.25, "dropout": 0.1},
    "data": {"crop_size": 32, "batch_size": 2, "samples_per_epoch": 8, "num_workers": 2},
    "optimizer": {"lr": 0.02},
    "overlays": 0,
    "int8_calibration": 1,
    "accelerator": "cpu",
    "threads": 1,
}


def tensors(value, where="checkpoint"):
    """Every tensor of a checkpoint, by its place in it."""
    if isinstance(value, torch.Tensor):
        return {where: value}
    if not isinstance(value, dict | list | tuple):
        return {}
    found = {}
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        found |= tensors(item, f"{where}[{key!r}]")
    return found


def assert_same_run(straight: Path, resumed: Path) -> None:
    """Every tensor of the last checkpoints is equal, and so is every metric but timings."""
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] and a["state"]["epoch"] == b["state"]["epoch"]
    left, right = tensors(a), tensors(b)
    assert left.keys() == right.keys() and len(left) > 300
    unequal = [key for key in left if not torch.equal(left[key], right[key])]
    assert not unequal, f"{len(unequal)} of {len(left)} tensors differ, e.g. {unequal[:3]}"
    metrics = [
        [
            {k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
        for run in (straight, resumed)
    ]
    assert metrics[0] == metrics[1] and len(metrics[0]) == a["state"]["epoch"]


def kill_when(path: Path, args: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``terraseg ARGS`` and SIGKILL its whole process group as soon as ``path`` exists."""
    process = subprocess.Popen(
        [str(BIN / "terraseg"), "-q", *args],
        env=env,
        start_new_session=True,  # its own process group: ranks and loader workers die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not path.exists():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"no {path.name} within 300 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cli_train(out: Path, config: Path, store: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(store), "--config", str(config), "--out", str(out), *extra]


def mlflow_runs(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_killed_and_resumed_equals_straight_in_one_mlflow_run(
    store, tmp_path, sqlite_store_uri, devices
):
    """``terraseg train`` SIGKILLed after its first checkpoint, then run with --resume.

    A real kill of the command and every process it started (ranks, loader
    workers), at whatever point of epoch 2 or 3 the kill lands. With two loader
    workers per rank and dropout, every tensor of the last checkpoint (weights,
    optimizer, RNG states) and every metric but timings equals an uninterrupted
    run's, on one process and on two (gloo). The killed run's MLflow run, left
    RUNNING, is reopened by the resume: one run, FINISHED, holding every epoch once.
    """
    config = tmp_path / "train.yaml"
    experiment = f"resume-{devices}-{tmp_path.name}"
    tracking = {"experiment": experiment, "register_as": experiment, "alias": "candidate"}
    config.write_text(json.dumps({**RESUMABLE, "epochs": 3, "devices": devices,
                                  "tracking": tracking}))  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = CliRunner().invoke(cli, ["-q", *cli_train(straight, config, store, "--no-track")])
    assert result.exit_code == 0, result.output
    track = ("--tracking-uri", sqlite_store_uri)
    kill_when(resumed / "checkpoints" / "last.pt", cli_train(resumed, config, store, *track))
    assert not (resumed / "summary.json").exists(), "the run ended before it was killed"
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["state"]["epoch"] in (1, 2)
    (killed,) = mlflow_runs(sqlite_store_uri, experiment)
    assert killed.info.status == "RUNNING"  # nothing ended it
    assert (resumed / "mlflow_run_id").read_text().strip() == killed.info.run_id
    result = CliRunner().invoke(cli, ["-q", *cli_train(resumed, config, store, "--resume", *track)])
    assert result.exit_code == 0, result.output
    assert_same_run(straight, resumed)
    (run,) = mlflow_runs(sqlite_store_uri, experiment)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    client = mlflow.MlflowClient(sqlite_store_uri)
    for key in ("train/loss", "val/mean_iou", "val/iou/background"):  # 4: the best epoch's
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3, 4]
    assert json.loads(result.stdout)["model_uri"] == f"models:/{experiment}/1"
    assert client.get_model_version(experiment, "1").run_id == run.info.run_id


def test_a_new_run_in_the_folder_marks_a_killed_run_killed(store, tmp_path, sqlite_store_uri):
    """A run killed before its first checkpoint, then a new ``terraseg train`` into its folder."""
    config = tmp_path / "train.yaml"
    experiment = f"killed-{tmp_path.name}"
    settings = {**RESUMABLE, "epochs": 1, "tracking": {"experiment": experiment}}
    config.write_text(json.dumps({**settings, "data": {**RESUMABLE["data"], "num_workers": 0}}))
    out, track = tmp_path / "run", ("--tracking-uri", sqlite_store_uri)
    kill_when(out / "mlflow_run_id", cli_train(out, config, store, *track))
    (killed,) = mlflow_runs(sqlite_store_uri, experiment)
    assert killed.info.status == "RUNNING" and not (out / "checkpoints" / "last.pt").exists()
    result = CliRunner().invoke(cli, ["-q", *cli_train(out, config, store, *track)])
    assert result.exit_code == 0, result.output
    runs = {run.info.run_id: run.info.status for run in mlflow_runs(sqlite_store_uri, experiment)}
    new = (out / "mlflow_run_id").read_text().strip()
    assert runs == {killed.info.run_id: "KILLED", new: "FINISHED"}
