from __future__ import annotations

import json

from click.testing import CliRunner

from tests.mlflow_helpers import Trained
from workflows.cli.main import cli


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
