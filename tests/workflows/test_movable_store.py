"""The demo's MLflow store: a folder that can be moved, opening on the MLflow UI's runs page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.registry import describe_model, load_model
from terraseg.workflows.demo import EXPERIMENT, mlflow_ui_lines
from terraseg.workflows.mlflow_tracking import movable_experiment, start_tracking
from tests.mlflow_helpers import BANDS, fake_training


def test_the_demo_store_works_after_its_folder_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "demo"
    home.mkdir()
    uri = f"sqlite:///{home}/mlflow.db"
    experiment_id = movable_experiment(uri, EXPERIMENT)
    assert movable_experiment(uri, EXPERIMENT) == experiment_id  # found again, not made again
    monkeypatch.chdir(home)  # the demo's steps run in its folder
    with start_tracking(uri, EXPERIMENT, "demo", register="demo-model", alias="candidate") as run:
        fake_training(run, home / "run")
    client = MlflowClient(uri)
    experiment = client.get_experiment(experiment_id)
    assert experiment.artifact_location == f"mlruns/{experiment_id}"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    moved = tmp_path / "elsewhere" / "demo-copy"
    shutil.move(home, moved)
    monkeypatch.chdir(tmp_path)  # not the store's folder
    moved_uri = f"sqlite:///{moved}/mlflow.db"
    artifact = load_model("models:/demo-model@candidate", moved_uri)
    assert artifact.band_names == BANDS
    assert artifact.metadata["resolved_uri"] == "models:/demo-model/1"
    info = describe_model("demo-model@candidate", moved_uri)
    assert info["bands"] == BANDS and info["version"] == 1
    by_run = load_model(f"runs:/{info['run']['id']}/model", moved_uri)
    assert by_run.band_names == BANDS
    assert list((moved / "mlruns" / experiment_id).rglob("MLmodel"))
    assert not (tmp_path / "mlruns").exists()
    with (
        pytest.raises(ConfigError, match="run terraseg in that folder"),
        start_tracking(moved_uri, EXPERIMENT, "elsewhere"),
    ):
        pass


def test_the_ui_links_open_the_runs_of_the_ml_workflow(tmp_path: Path) -> None:
    command, runs, model = mlflow_ui_lines(tmp_path, "3")
    assert (
        command == f"  MLflow: cd {tmp_path} && mlflow ui --backend-store-uri sqlite:///mlflow.db"
    )
    assert runs.split() == [
        "runs", "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    ]  # fmt: skip
    assert model.endswith("/#/models/terraseg-demo?workflowType=machine_learning")
