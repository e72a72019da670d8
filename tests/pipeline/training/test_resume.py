"""Exact resume: a run stopped after a checkpoint and resumed equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.training.checkpoint import load_checkpoint
from workflows.cli.main import cli

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


def kill_after_first_checkpoint(args: list[str], out: Path, env: dict[str, str]) -> None:
    """Run ``terraseg ARGS`` and SIGKILL its whole process group once a checkpoint appears."""
    last = out / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        [str(BIN / "terraseg"), "-q", *args],
        env=env,
        start_new_session=True,  # its own process group: ranks and loader workers die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not last.exists():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "summary.json").exists(), "the run ended before it was killed"


def cli_train(out: Path, config: Path, store: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(store), "--config", str(config), "--out", str(out), *extra]


@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_killed_and_resumed_equals_straight(store, tmp_path, devices):
    """``terraseg train`` SIGKILLed after its first checkpoint, then run with --resume.

    A real kill of the command and every process it started (ranks, loader
    workers), at whatever point of epoch 2 or 3 the kill lands. With two loader
    workers per rank and dropout, every tensor and metric equals an uninterrupted run's.
    """
    config = tmp_path / "train.yaml"
    settings = {**RESUMABLE, "epochs": 3, "devices": devices}
    config.write_text(json.dumps({**settings, "tracking": {"enabled": False}}))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = CliRunner().invoke(cli, ["-q", *cli_train(straight, config, store)])
    assert result.exit_code == 0, result.output
    kill_after_first_checkpoint(cli_train(resumed, config, store), resumed, dict(os.environ))
    epoch = load_checkpoint(resumed / "checkpoints" / "last.pt")["state"]["epoch"]
    assert epoch in (1, 2)
    result = CliRunner().invoke(cli, ["-q", *cli_train(resumed, config, store, "--resume")])
    assert result.exit_code == 0, result.output
    assert_same_run(straight, resumed)
