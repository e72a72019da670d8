"""A real training run recorded in MLflow: SQLite file and `mlflow server`."""

import json
import uuid

import mlflow
import numpy as np
import torch
from click.testing import CliRunner

from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.registry import load_model
from terraseg.pipeline.store import store_digest
from terraseg.pipeline.training import records
from terraseg.workflows.cli.main import cli
from terraseg.workflows.train_run import launch
from tests.pipeline.training.test_train import tiny


def test_training_run_is_recorded_and_registered(store, store_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    name = f"tracked-{uuid.uuid4().hex[:8]}"
    config = tiny(
        **{
            "tracking.experiment": "tracking-tests",
            "tracking.register_as": name,
            "tracking.alias": "candidate",
        }
    )
    real = records.scores  # epoch 1 is the best: the registered weights are not the last
    mious = iter([0.6, 0.5])
    monkeypatch.setattr(records, "scores", lambda m: {**real(m), "mean_iou": next(mious)})
    summary = launch(config, store, tmp_path / "run", progress=False)

    client = mlflow.MlflowClient(store_uri)
    version = client.get_model_version_by_alias(name, "candidate")
    record = client.get_run(version.run_id)
    params = record.data.params
    assert params["model.backbone"] == "mobilenetv2" and params["epochs"] == "2"
    assert params["data.store"].endswith("data.zarr") and "statistics.red.mean" in params
    assert "code.terraseg" in params and "code.torch" in params
    history = client.get_metric_history(version.run_id, "val/mean_iou")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.5), (3, 0.6)]
    headline = record.data.metrics  # each metric's latest value: the best epoch's
    assert headline["val/mean_iou"] == 0.6 and headline["last/val/mean_iou"] == 0.5
    assert (headline["best_epoch"], headline["last_epoch"]) == (1, 2)
    shown = CliRunner().invoke(cli, ["registry", "show", f"{name}@candidate"])
    assert shown.exit_code == 0, shown.output
    assert "metrics of epoch 1, the best of 2 (the registered weights):" in shown.stdout
    assert "val/mean_iou                     0.6\n" in shown.stdout
    assert "last epoch (2): val/mean_iou 0.5" in shown.stdout
    for key in ("train/loss", "train/lr", "val/iou/building", "val/accuracy/road"):
        assert key in record.data.metrics, key
    # the version says what the model is; the run names its commit and its dataset
    tags = version.tags
    assert tags["classes"] == "0 background, 1 building, 2 road, 3 water, 4 vegetation"
    assert (tags["bands"], tags["input_dtype"], tags["tile_size"]) == (
        "red, green, blue, nir", "uint8", "64")  # fmt: skip
    assert (tags["resolution"], tags["val_mean_iou"], tags["best_epoch"]) == ("2 m", "0.6000", "1")
    assert tags["training_store"] == str(store)
    assert tags["training_store_digest"] == store_digest(store)
    assert "Validation mean IoU 0.6000 (epoch 1, the best; these weights)" in version.description
    if "code.git_commit" in params:
        assert record.data.tags["mlflow.source.git.commit"] == params["code.git_commit"]
    (dataset_input,) = record.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == (
        "data.zarr", store_digest(store), "local")  # fmt: skip
    assert json.loads(dataset.source)["uri"] == str(store)
    profile = json.loads(dataset.profile)
    assert profile["scenes"] == 2 and profile["train_tiles"] > 0 and profile["val_tiles"] > 0
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    files = _artifacts(client, version.run_id)
    assert "config.yaml" in files
    assert any(f.startswith("plots/") and "confusion" in f for f in files)
    assert any(f.startswith("plots/") and "curve" in f for f in files)
    assert any("overlay" in f for f in files)

    local = load_artifact(tmp_path / "run" / "model")
    remote = load_model(f"models:/{name}@candidate", store_uri)
    assert remote.manifest()["classes"] == local.manifest()["classes"]
    x = torch.from_numpy(
        local.normalization.apply(np.random.default_rng(0).integers(0, 255, (1, 4, 48, 48)))
    )
    with torch.inference_mode():
        np.testing.assert_array_equal(
            remote.build_model()(x).numpy(), local.build_model()(x).numpy()
        )
    assert summary["model_uri"] == f"models:/{name}/{version.version}"


def test_unreachable_server_fails_before_training(store, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(store),
            "--out",
            str(tmp_path / "run"),
            "--tracking-uri",
            "http://127.0.0.1:9",
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "127.0.0.1:9" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def _artifacts(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found
