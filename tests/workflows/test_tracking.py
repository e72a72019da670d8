from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from terraseg.pipeline.errors import ConfigError, TrackingError
from terraseg.pipeline.registry import load_model
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.tracker import NullTracker
from terraseg.workflows.mlflow_tracking import start_tracking
from terraseg.workflows.train_run import tracker_for_rank
from tests.mlflow_helpers import BANDS, Trained, reference_softmax, sample_images

ROOT = Path(__file__).resolve().parents[2]


def _client(trained: Trained) -> MlflowClient:
    return MlflowClient(tracking_uri=trained.tracking_uri, registry_uri=trained.tracking_uri)


def test_a_training_run_records_params_metrics_and_artifacts(trained: Trained) -> None:
    client = _client(trained)
    run = client.get_run(trained.run_ids[0])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.backbone"] == "mobilenetv2"
    assert params["train.epochs"] == "2"
    assert params["data.statistics.nir.mean"] == "120.0"
    assert params["code.terraseg"] and params["code.mlflow"]
    history = client.get_metric_history(run.info.run_id, "val.miou")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.3), (1, 0.4)]
    assert {"train.loss", "train.lr", "val.accuracy", "val.iou.road", "train.tiles_per_s"} <= set(
        run.data.metrics
    )
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "overlays"} <= files
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}


def test_registration_creates_versions_and_moves_the_alias(trained: Trained) -> None:
    assert trained.model_uris == [f"models:/{trained.name}/1", f"models:/{trained.name}/2"]
    client = _client(trained)
    assert str(client.get_model_version_by_alias(trained.name, "candidate").version) == "2"
    versions = {
        str(v.version): v.run_id for v in client.search_model_versions(f"name='{trained.name}'")
    }
    assert versions == {"1": trained.run_ids[0], "2": trained.run_ids[1]}


def test_every_uri_form_gives_the_in_memory_model_outputs(trained: Trained) -> None:
    import torch

    name, run_id = trained.name, trained.run_ids[1]
    uris = [f"models:/{name}@candidate", f"models:/{name}/2", f"runs:/{run_id}/model"]
    images = sample_images()
    expected = reference_softmax(trained.model, images)
    for uri in [*uris, str(trained.artifact_dir)]:
        artifact = load_model(uri, trained.tracking_uri)
        assert artifact.band_names == BANDS and artifact.tile_size == 64
        x = torch.from_numpy(artifact.normalization.apply(images))
        with torch.inference_mode():
            got = torch.softmax(artifact.build_model()(x), dim=1).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=uri)


def test_pyfunc_serves_class_map_and_probabilities(trained: Trained) -> None:
    import mlflow.pyfunc

    from terraseg.pipeline.registry import use_tracking_uri

    with use_tracking_uri(trained.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{trained.name}@candidate")
    images = sample_images()
    out = pyfunc.predict(images)
    expected = reference_softmax(trained.model, images)
    assert out["class_map"].dtype == np.uint8 and out["class_map"].shape == (2, 64, 64)
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["class_map"], expected.argmax(axis=1))
    assert pyfunc.metadata.get_input_schema() is None  # the model checks its input
    assert pyfunc.metadata.metadata["terraseg_input"]["dtypes"] == ["uint8", "float32"]


FRESH_PROCESS = """
import sys
import mlflow.pyfunc
import numpy as np

model = mlflow.pyfunc.load_model(sys.argv[1])
images = np.random.default_rng(1).integers(0, 255, (2, 4, 64, 64), dtype=np.uint8)
out = model.predict(images)
np.save(sys.argv[2], out["probabilities"])
loaded = sorted(m for m in sys.modules if m.startswith(("pipeline", "workflows")))
assert "terraseg.pipeline.training" not in sys.modules and "workflows" not in sys.modules, loaded
print(out["class_map"].shape, out["class_map"].dtype)
"""


def test_pyfunc_predicts_in_a_fresh_process(trained: Trained, tmp_path: Path) -> None:
    if not trained.tracking_uri.startswith("http"):
        pytest.skip("one fresh interpreter is enough: the server store covers it")
    env = {"PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": trained.tracking_uri, "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_PROCESS), f"models:/{trained.name}/2",
         str(tmp_path / "p.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "(2, 64, 64) uint8"
    expected = reference_softmax(trained.model, sample_images())
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)


def test_an_unreachable_server_fails_fast_naming_the_uri(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    start = time.monotonic()
    expected = f"cannot reach the MLflow tracking server at {uri}"
    with pytest.raises(TrackingError, match=expected), start_tracking(uri, "tests"):
        pytest.fail("the run must not start")
    assert time.monotonic() - start < 10
    with pytest.raises(ConnectionError):
        load_model("models:/seg@candidate", uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sqlite:////nonexistent/terraseg/mlflow.db", "folder /nonexistent/terraseg does not"),
        ("postgresql://terraseg@127.0.0.1:1/mlflow", "postgresql://terraseg@127.0.0.1:1/mlflow"),
    ],
)
def test_an_unusable_database_fails_fast(uri: str, message: str) -> None:
    with pytest.raises(TrackingError, match=message), start_tracking(uri, "tests"):
        pytest.fail("the run must not start")


def test_a_file_that_is_not_a_database_fails(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database")
    store = f"sqlite:///{tmp_path}/notes.db"
    with (
        pytest.raises(TrackingError, match="is not an SQLite database"),
        start_tracking(store, "t"),
    ):
        pass


def test_other_ranks_do_not_talk_to_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with tracker_for_rank(TrainConfig(), is_main=False) as tracker:
        assert isinstance(tracker, NullTracker)


def test_alias_needs_a_registered_name() -> None:
    with pytest.raises(ConfigError, match="--register"), start_tracking(None, "t", alias="c"):
        pass


def test_a_failing_block_marks_the_run_failed(sqlite_store_uri: str) -> None:
    failing = start_tracking(sqlite_store_uri, "tests-failed")
    with pytest.raises(RuntimeError, match="diverged"), failing as tracker:
        tracker.log_metrics({"train.loss": float("nan")}, step=0)
        raise RuntimeError("diverged")
    run = MlflowClient(sqlite_store_uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"


DEFAULT_STORE = """
from terraseg.pipeline.registry import check_tracking_reachable, resolve_tracking_uri

uri = resolve_tracking_uri(None)
check_tracking_reachable(uri)
print(uri)
"""


def test_the_default_store_is_mlflow_db_in_the_working_directory(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", DEFAULT_STORE],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == f"sqlite:///{tmp_path}/mlflow.db"
    # start_tracking(None, ...) uses this URI; the [sqlite] tests cover such a store.
