from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from terraseg.pipeline.errors import InputError, ModelNotFoundError, TrackingError
from terraseg.pipeline.registry import (
    ModelRef,
    check_tracking_reachable,
    describe_model,
    fetch_model,
    list_models,
    load_model,
    promote,
    redact,
)
from tests.mlflow_helpers import BANDS, Trained


def test_model_references() -> None:
    assert ModelRef.parse("models:/seg@candidate") == ModelRef("seg", alias="candidate")
    assert ModelRef.parse("seg/3") == ModelRef("seg", version="3")
    assert ModelRef.parse("seg") == ModelRef("seg")
    for bad in ["models:/", "seg/latest", "seg/1@x"]:
        with pytest.raises(InputError, match="NAME, NAME@ALIAS or NAME/VERSION"):
            ModelRef.parse(bad)


def test_unknown_models_aliases_versions_and_runs(trained: Trained) -> None:
    uri, name = trained.tracking_uri, trained.name
    cases = {
        "models:/no-such-model/1": f"no registered model 'no-such-model' in .*{name}",
        f"models:/{name}@production": r"no alias 'production' .*versions: 1, 2 \(candidate\)",
        f"models:/{name}/9": r"has no version 9 .*versions: 1, 2",
        "runs:/0123456789abcdef/model": "no run '0123456789abcdef'",
    }
    for model_uri, message in cases.items():
        with pytest.raises(ModelNotFoundError, match=message):
            load_model(model_uri, uri)


def test_a_missing_local_folder_names_the_uri_forms(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="models:/NAME@ALIAS"):
        load_model(tmp_path / "nothing")
    with pytest.raises(InputError, match="neither a terraseg model artifact nor an MLflow"):
        load_model(tmp_path)


def test_describe_list_and_promote(trained: Trained) -> None:
    uri, name = trained.tracking_uri, trained.name
    info = describe_model(f"{name}@candidate", uri)
    assert (info["name"], info["version"], info["aliases"]) == (name, 2, ["candidate"])
    assert info["bands"] == BANDS and info["classes"][1]["name"] == "building"
    assert info["run"]["id"] == trained.run_ids[1] and info["run"]["experiment"] == "tests"
    assert info["run"]["metrics"]["val.miou"] == pytest.approx(0.4)
    by_run = describe_model(f"runs:/{trained.run_ids[0]}/model", uri)
    assert by_run["run"]["name"] == "run-0" and "version" not in by_run
    assert describe_model(trained.artifact_dir)["tile_size"] == 64
    assert describe_model(name, uri)["version"] == 2  # latest

    assert promote(name, 1, "production", uri) is None
    assert promote(name, 2, "production", uri) == 1
    listed = {m["name"]: m for m in list_models(uri)}[name]
    assert listed["aliases"] == {"candidate": 2, "production": 2}
    assert listed["latest_version"] == 2
    with pytest.raises(ModelNotFoundError, match="no version 5"):
        promote(name, 5, "production", uri)


def test_a_model_is_read_in_place_or_downloaded_once(trained: Trained, tmp_path: Path) -> None:
    from terraseg.pipeline.prediction.inference import open_for_workers

    uri, name, cache = trained.tracking_uri, trained.name, tmp_path / "cache"
    folder, exact = fetch_model(f"models:/{name}@candidate", uri, cache)
    assert exact == f"models:/{name}/2" and (folder / "MLmodel").is_file()
    if uri.startswith("sqlite:"):  # on this disk: nothing copied
        assert not cache.exists()
    else:
        assert folder.parent == cache
        mtime = (folder / "MLmodel").stat().st_mtime_ns
        assert fetch_model(f"models:/{name}/2", uri, cache)[0] == folder  # found, not fetched
        assert (folder / "MLmodel").stat().st_mtime_ns == mtime
    artifact, local = open_for_workers(f"models:/{name}@candidate", uri, cache, shared_disk=True)
    assert local == str(folder) and artifact.metadata["resolved_uri"] == exact
    remote = open_for_workers(f"models:/{name}@candidate", uri, cache, shared_disk=False)[1]
    assert remote == exact  # workers elsewhere: the exact version, never the alias


class _Answers(BaseHTTPRequestHandler):
    status = 404

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Answers,), {"status": request.param})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("http_server", [404], indirect=True)
def test_a_server_that_is_not_mlflow(http_server: str) -> None:
    with pytest.raises(TrackingError, match="answered HTTP 404 to /health"):
        check_tracking_reachable(http_server)


@pytest.mark.parametrize("http_server", [401], indirect=True)
def test_a_server_that_asks_for_credentials_is_reachable(http_server: str) -> None:
    check_tracking_reachable(http_server)  # MLflow's client sends MLFLOW_TRACKING_TOKEN etc.


def test_passwords_stay_out_of_messages() -> None:
    assert redact("https://ana:s3cret@mlflow.example.org:8443/x") == (
        "https://ana:***@mlflow.example.org:8443/x"
    )
    with pytest.raises(TrackingError) as caught:
        check_tracking_reachable("http://ana:s3cret@127.0.0.1:9", timeout=2)
    assert "s3cret" not in str(caught.value)
