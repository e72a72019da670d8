"""Predict's outputs under worker loss, concurrent runs, retraining and missing blocks."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terraseg.pipeline.errors import IncompleteOutputError
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import open_model
from terraseg.pipeline.prediction.job import needs_work, plan_files
from terraseg.pipeline.prediction.outputs import missing_blocks
from terraseg.pipeline.prediction.tasks import (
    assemble_file,
    infer_block,
    read_block,
    start_file,
    write_block_interior,
)
from tests.dask_processes import dask_cluster, kill, worker_pids
from tests.helpers import tiny_model_artifact, tiny_scenes

TERRASEG = str(Path(sys.executable).parent / "terraseg")
CONFIG = PredictConfig(probabilities=True, block_size=128, threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    scenes = tiny_scenes(root / "scenes", size="640x512", resolution=1.0)
    return tiny_model_artifact(root / "model"), scenes.scenes


def plan(model, scenes, out, config=CONFIG):
    jobs, errors = plan_files(str(model), open_model(str(model)), scenes, out, config)
    assert not errors
    return jobs


def local_run(model, scenes, out):
    outcomes = predict_files(plan(model, scenes, out), InProcessExecutor())
    assert all(o.error is None for o in outcomes)
    return [p for o in outcomes for p in o.outputs]


def contents(path):
    """Pixels of every band and overview level, tags and descriptions."""
    with rasterio.open(path) as src:
        levels = [src.read()]
        for factor in src.overviews(1):
            shape = (src.count, src.height // factor, src.width // factor)
            levels.append(src.read(out_shape=shape))
        return levels, src.tags(), src.descriptions, src.overviews(1)


def assert_same(expected, folder):
    for path in expected:
        if path.suffix in (".qml", ".xml"):  # a QGIS style, GDAL's categories and table
            assert (folder / path.name).read_text() == path.read_text()
            continue
        levels, tags, descriptions, overviews = contents(path)
        got_levels, got_tags, got_descriptions, got_overviews = contents(folder / path.name)
        assert (tags, descriptions, overviews) == (got_tags, got_descriptions, got_overviews)
        for a, b in zip(levels, got_levels, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    model, scenes = data
    return local_run(model, scenes, tmp_path_factory.mktemp("reference"))


def test_a_model_folder_retrained_in_place_is_redone(data, tmp_path):
    _model, scenes = data
    folder = tiny_model_artifact(tmp_path / "model", seed=1)
    out = tmp_path / "out"
    local_run(folder, scenes[:1], out)
    assert not needs_work(plan(folder, scenes[:1], out)[0])
    tiny_model_artifact(folder, seed=2)  # retrained into the same folder
    (job,) = plan(folder, scenes[:1], out)
    assert needs_work(job)
    with rasterio.open(job.paths.classes) as src:
        old = src.tags()["TERRASEG_WEIGHTS"]
    local_run(folder, scenes[:1], out)
    with rasterio.open(job.paths.classes) as src:
        assert src.tags()["TERRASEG_WEIGHTS"] == job.tags["TERRASEG_WEIGHTS"] != old


def test_a_block_not_written_keeps_the_output_from_being_committed(data, tmp_path):
    model, scenes = data
    (job,) = plan(model, scenes[:1], tmp_path)
    start_file(job)
    parts = infer_block(job, (0, 0), read_block(job, (0, 0)))
    write_block_interior(None, job, (0, 0), parts, None, None, None)
    start_file(job)  # run again (a lost start task): what was written stays
    blocks = len(job.plan.blocks)
    assert len(missing_blocks(job.paths)) == blocks - 1 and (0, 0) not in missing_blocks(job.paths)
    with pytest.raises(IncompleteOutputError, match=f"{blocks - 1} blocks were not written"):
        assemble_file(job)
    assert not job.paths.classes.exists() and not job.paths.probabilities.exists()


def predict_command(model, scenes, out, *extra):
    return [TERRASEG, "-q", "predict", *map(str, scenes), "--model", str(model), "--out", str(out),
            "--probabilities", "--block-size", "128", "--threads", "1", *extra]  # fmt: skip


@pytest.mark.parametrize("delay", [0.0, pytest.param(3.0, marks=pytest.mark.slow)])
def test_two_runs_on_one_out_folder(data, reference, tmp_path, delay):
    model, scenes = data
    out = tmp_path / "out"
    command = predict_command(model, scenes, out)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    assert any(code == 0 for code, _, _ in results)
    for code, _, stderr in results:
        assert "Traceback" not in stderr
        if code != 0:  # refused: one line naming the lock holder
            assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
            assert "another terraseg run (pid " in stderr
    assert_same(reference, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference)


@pytest.mark.slow  # about 40 s on 2 cores: two worker restarts, each loading torch and the model
def test_worker_loss_gives_the_local_result_or_no_output(data, reference, tmp_path):
    model, scenes = data
    out = tmp_path / "out"
    with dask_cluster(tmp_path / "cluster") as address:
        command = predict_command(model, scenes, out, "--scheduler", address)
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = []
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and run.poll() is None:
            killed += worker_pids(address, holding=lambda key: key.startswith("predict-start-"))
        assert killed, "the start task was never seen on a worker"
        kill(killed[0])  # the worker holding a file's first task
        time.sleep(2.0)
        others = [pid for pid in worker_pids(address) if pid != killed[0]]
        assert run.poll() is None, "the run ended before the second kill"
        kill(others[0])
        code, (_stdout, stderr) = run.wait(timeout=300), run.communicate()
    assert "Traceback" not in stderr
    print(f"worker loss: exit {code}; stderr: {stderr.strip()[-300:]}")
    if code == 0:
        assert_same(reference, out)
    else:  # failed: nothing under a final name
        assert not any(
            p.name.endswith(".tif") and not p.name.startswith(".") for p in out.iterdir()
        )
