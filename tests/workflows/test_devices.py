"""Device seams of prediction, checked on CPU: cluster resources and per-thread GPUs."""

import threading
from pathlib import Path

import pytest
from dask.distributed import Client, LocalCluster

from terraseg.pipeline.prediction.devices import gpu_for_worker
from terraseg.workflows.cli.main import cli
from terraseg.workflows.cluster import dask_client
from terraseg.workflows.workers import configure_workers, local_cluster_plan


def test_a_local_cluster_for_two_gpus_runs_tasks_that_ask_for_a_gpu():
    plan = local_cluster_plan("cuda", None, gpus=2)
    assert (plan.workers, plan.threads_per_worker, plan.resources) == (2, 2, {"GPU": 1.0})
    assert local_cluster_plan("cuda", 1, gpus=2).workers == 1
    assert local_cluster_plan("cpu", 2).resources is None
    with dask_client(
        None, workers=plan.workers, threads_per_worker=1, resources=plan.resources
    ) as client:
        futures = [client.submit(sum, [i, 1], resources={"GPU": 1}, pure=False) for i in range(4)]
        assert [f.result(timeout=60) for f in futures] == [1, 2, 3, 4]  # none waits forever


def _record_set_device():
    """On a worker: replace torch.cuda.set_device by a recorder of (thread, index)."""
    import torch

    calls = []
    torch.cuda.set_device = lambda index: calls.append((threading.get_ident(), index))
    torch.cuda._terraseg_calls = calls


def _task():
    """What an inference task does first, and what this thread was given."""
    import torch
    from distributed import get_worker

    from terraseg.pipeline.prediction.devices import use_assigned_gpu

    index = use_assigned_gpu()
    me = threading.get_ident()
    seen = [i for thread, i in torch.cuda._terraseg_calls if thread == me]
    return get_worker().name, index, seen[-1], me != threading.main_thread().ident


def test_each_task_thread_makes_its_workers_gpu_current():
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.run(_record_set_device)
        configure_workers(client, "cuda", gpus=2)
        names = [str(i["name"]) for i in client.scheduler_info()["workers"].values()]
        results = client.gather([client.submit(_task, pure=False) for _ in range(16)])
    assert {gpu_for_worker(str(n), names, 2) for n in names} == {0, 1}
    for name, assigned, made_current, in_task_thread in results:
        assert assigned == made_current == gpu_for_worker(str(name), names, 2)
        assert in_task_thread


def test_cuda_without_a_gpu_fails_at_once_with_one_line(tmp_path):
    from click.testing import CliRunner

    from tests.helpers import tiny_model_artifact, tiny_scenes

    model = tiny_model_artifact(tmp_path / "model")
    scene = tiny_scenes(tmp_path / "s", scenes=1).scenes[0]
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "--model", str(model), "--out", str(tmp_path / "o"),
              "--device", "cuda"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: --device cuda, but torch sees no CUDA device")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_gpu_check_refuses_without_cuda_in_one_line():
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["bench", "gpu"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no CUDA device is visible; run with --device cpu to try"


@pytest.mark.slow
def test_gpu_check_runs_its_parts_on_the_cpu(tmp_path):
    """The GPU check's code, on the CPU at small sizes: every part prints its figures."""
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    assert script.is_file()
    from click.testing import CliRunner

    result = CliRunner().invoke(
        cli, ["bench", "gpu", "--device", "cpu", "--tile", "64", "--batch-size", "2", "--steps",
              "1", "--scene-size", "512", "--backbone", "mobilenetv2", "--train-backbone",
              "mobilenetv2", "--workdir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    parts = [json.loads(line) for line in result.output.splitlines()]
    assert [p.get("part") for p in parts] == [None, "model", "train", "predict"]
    assert parts[3]["pipeline_mpx_s"] > 0 and parts[2]["epoch_s"] > 0
    env = {**os.environ, "PYTHON": sys.executable}
    refused = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "no CUDA device visible" in refused.stderr
