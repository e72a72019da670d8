from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

from terraseg.workflows.cli.main import cli
from tests.mlflow_helpers import Trained


def _run(*args: str, group: str = "registry") -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [group, *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_show_and_promote(trained: Trained) -> None:
    uri, name = trained.tracking_uri, trained.name
    code, out, _ = _run("list", "--tracking-uri", uri)
    assert code == 0
    assert any(line.split()[:2] == [name, "2"] for line in out.splitlines())
    code, out, _ = _run("show", f"{name}/1", "--tracking-uri", uri)
    assert code == 0, out
    assert f"{name} version 1" in out and "bands (uint8): red, green, blue, nir" in out
    assert "building" in out and "val.miou" in out and trained.run_ids[0] in out
    code, out, _ = _run("promote", name, "1", "staging", "--tracking-uri", uri)
    assert (code, out.strip()) == (0, f"{name}@staging -> version 1")
    code, out, _ = _run("show", f"{name}@staging", "--json", "--tracking-uri", uri)
    assert json.loads(out)["version"] == 1


def test_errors_are_one_line(trained: Trained) -> None:
    code, _, err = _run("show", f"{trained.name}@nope", "--tracking-uri", trained.tracking_uri)
    assert code == 1 and err.startswith("Error: model") and len(err.splitlines()) == 1
    code, _, err = _run("promote", trained.name, "1", "12", "--tracking-uri", trained.tracking_uri)
    assert code == 2 and "ALIAS" in err


def test_an_unreachable_server_via_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    code, _, err = _run("list")
    assert code == 1 and "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err


def test_the_former_name_models_still_works_and_is_hidden(trained: Trained) -> None:
    uri, name = trained.tracking_uri, trained.name
    former = _run("show", f"{name}/1", "--tracking-uri", uri, group="models")
    current = _run("show", f"{name}/1", "--tracking-uri", uri)
    assert former[:2] == current[:2] and former[0] == 0  # exit code and stdout
    code, out, _ = _run("--help", group="models")
    assert code == 0 and "promote" in out
    listed = CliRunner().invoke(cli, ["--help"]).stdout
    commands = {line.split()[0] for line in listed.split("Commands:")[1].splitlines() if line}
    assert {"model", "registry"} <= commands and "models" not in commands


def test_a_version_says_what_it_is_and_takes_a_held_back_score(
    trained: Trained, tmp_path: Path
) -> None:
    uri, name = trained.tracking_uri, trained.name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version(name, "1")
    assert version.tags["classes"] == "0 background, 1 building, 2 road, 3 water, 4 vegetation"
    assert (version.tags["bands"], version.tags["tile_size"]) == ("red, green, blue, nir", "64")
    assert version.tags["input_dtype"] == "uint8"
    assert "- Classes: 0 background, 1 building" in version.description
    metrics = tmp_path / "metrics.json"
    for score in (0.5, 0.7123):  # a second evaluation replaces the first's line
        metrics.write_text(json.dumps({"mean_iou": score, "pixel_accuracy": 0.93}))
        code, out, err = _run("tag", f"{name}/1", "owner=gis", "--evaluation", str(metrics),
                              "--tracking-uri", uri)  # fmt: skip
        assert code == 0, err
    assert f"{name}/1 heldout_mean_iou=0.7123" in out.splitlines()
    version = client.get_model_version(name, "1")
    assert version.tags["owner"] == "gis" and version.tags["heldout_mean_iou"] == "0.7123"
    assert version.tags["heldout_pixel_accuracy"] == "0.9300"
    held_back = [line for line in version.description.splitlines() if "Held-back" in line]
    assert held_back == [f"- Held-back mean IoU 0.7123, pixel accuracy 0.9300 ({metrics})"]
    code, out, _ = _run("show", f"{name}/1", "--tracking-uri", uri)
    assert code == 0 and "  - Held-back mean IoU 0.7123" in out
    code, _, err = _run("tag", f"{name}/1", "--tracking-uri", uri)
    assert code == 2 and "KEY=VALUE" in err
