"""Checkpoints are plain data, read without running anything that a file holds."""

import json
import os
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.training.checkpoint import (
    check_plain,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from terraseg.workflows.cli.main import cli
from tests.pipeline.training.test_train import TINY


class RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _resume(store, out, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(TINY))
    args = ["-q", "train", "--data", str(store), "--out", str(out), "--config", str(config)]
    return CliRunner().invoke(cli, [*args, "--resume", "--no-track"])


def test_resume_refuses_a_checkpoint_that_would_run_code(store, tmp_path):
    marker = tmp_path / "ran"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"model": RunsCode(f"touch {marker}"), "step": 1}, last)
    result = _resume(store, tmp_path / "run", tmp_path)
    assert result.exit_code == 1
    assert not marker.exists()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {last}: not loaded")
    assert "could run code" in lines[0]


def test_resume_refuses_a_truncated_checkpoint(store, tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(last, {"model": {"w": torch.ones(1000)}, "step": 1})
    last.write_bytes(last.read_bytes()[:-100])
    result = _resume(store, tmp_path / "run", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {last}: the checkpoint is truncated or damaged; resume from a checkpoint "
        "terraseg wrote, or start without --resume"
    ]


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_every_kind_of_damage_is_one_training_error(tmp_path, cut):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(1000)}, "step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)] if isinstance(cut, float) else data[:cut])
    with pytest.raises(TrainingError, match="truncated or damaged") as info:
        load_checkpoint(path)
    assert info.value.path == str(path) and "\n" not in str(info.value)


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(TrainingError, match=r"not a checkpoint \(no model, model_config"):
        load_checkpoint(path)
    path.write_bytes(random.Random(0).randbytes(256))  # bytes the unpickler refuses
    with pytest.raises(TrainingError, match="not loaded"):
        load_checkpoint(path)


def test_any_garbage_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "weights.pt"
    for seed in range(200):  # some raise IndexError or KeyError inside torch's unpickler
        path.write_bytes(random.Random(seed).randbytes(256))
        with pytest.raises(TrainingError) as caught:
            load_checkpoint(path)
        assert caught.value.path == str(path) and "\n" not in str(caught.value)


def test_only_plain_data_is_written(tmp_path):
    check_plain({"a": [1, 2.5, "x", None, True, (torch.ones(1),)], "b": {"c": torch.zeros(2)}})
    with pytest.raises(TypeError, match=r"checkpoint\['rng'\]\[0\] is a ndarray"):
        save_checkpoint(tmp_path / "c.pt", {"rng": [np.zeros(3)]})
    with pytest.raises(TypeError, match=r"checkpoint\['best'\] is a float64"):
        check_plain({"best": np.float64(0.5)})  # a float subclass, pickled as a NumPy object
    assert not (tmp_path / "c.pt").exists()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    path = save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.normal(), torch.rand(2).tolist())
    set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.normal(), torch.rand(2).tolist()) == expected
