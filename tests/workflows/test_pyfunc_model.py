"""The logged pyfunc model: its code travels with it, it imports little, it checks its input.

The default tests save a model to a temporary folder as training logs it and load it
in a subprocess that refuses GDAL, Zarr, Dask, Click and the rest
(``pyfunc_probe.py``), and load a model of the former layout through ``terraseg
predict``. The slow test installs mlflow, torch and numpy alone in a fresh virtual
environment and predicts there with a registered model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.prediction.arrays import predict_array
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.registry import fetch_model
from terraseg.workflows.cli.main import cli
from terraseg.workflows.mlflow_tracking import pip_requirements, pyfunc_arguments, start_tracking
from tests.conftest import _free_port, _wait_for_http
from tests.helpers import tiny_model_artifact, tiny_scenes

PROBE = Path(__file__).with_name("pyfunc_probe.py")
FP32 = PredictConfig(precision="fp32")  # what the pyfunc predicts with, on any CPU
OLD_ENTRY = (  # the model code that models logged before terraseg shipped its source hold
    "import mlflow.models\n\nfrom pipeline.pyfunc import TerrasegPyfunc\n\n"
    "mlflow.models.set_model(TerrasegPyfunc())\n"
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model saved as an MLflow model folder, with the arguments training logs it with."""
    root = tmp_path_factory.mktemp("pyfunc")
    artifact = tiny_model_artifact(root / "artifact")
    with pyfunc_arguments(artifact) as arguments:
        mlflow.pyfunc.save_model(str(root / "model"), **arguments)
    return root / "model"


def images(shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """Smooth uint8 pixels (varied classes from the tiny model) of ``shape``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (*shape[:-2], shape[-2] // 8 + 1, shape[-1] // 8 + 1))
    return np.kron(coarse, np.ones((8, 8)))[..., : shape[-2], : shape[-1]].astype(np.uint8)


def probe(python: str, model: str, image: np.ndarray, out: Path, env: dict[str, str],
          refuse: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run ``pyfunc_probe.py`` isolated (``-I``) in ``out``; its report."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", image)
    command = [python, "-I", str(PROBE), model, str(out / "images.npy"), str(out)]
    done = subprocess.run([*command, *(["--refuse"] if refuse else [])], cwd=out, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def assert_equals_predict_array(folder: Path, image: np.ndarray, out: Path) -> None:
    """The probe's outputs in ``out`` equal :func:`predict_array` of each image here."""
    artifact = load_artifact(folder)
    batch = image if image.ndim == 4 else image[None]
    expected = [predict_array(artifact, one, config=FP32) for one in batch]
    class_map, probabilities = np.load(out / "class_map.npy"), np.load(out / "probabilities.npy")
    if image.ndim == 3:
        class_map, probabilities = class_map[None], probabilities[None]
    np.testing.assert_array_equal(class_map, np.stack([e.classes for e in expected]))
    np.testing.assert_allclose(
        probabilities, np.stack([e.probabilities for e in expected]), rtol=0, atol=1e-5
    )
    assert len(np.unique(class_map)) > 1  # the comparison is not between two blank maps


def test_saved_model_holds_its_code_and_three_requirements(saved: Path) -> None:
    code = saved / "code" / "terraseg"
    assert (code / "__init__.py").is_file() and (code / "pipeline" / "pyfunc.py").is_file()
    assert (code / "workflows" / "mlflow_tracking.py").is_file()
    assert not list(code.rglob("__pycache__")) and {p.suffix for p in code.rglob("*.*")} == {".py"}
    assert (saved / "requirements.txt").read_text().split() == pip_requirements()
    assert [r.split("==")[0] for r in pip_requirements()] == ["mlflow", "torch", "numpy"]
    described = yaml.safe_load((saved / "MLmodel").read_text())["metadata"]["terraseg_input"]
    assert described["dtypes"] == ["uint8", "float32"]
    assert described["shapes"] == ["(4, rows, cols)", "(n, 4, rows, cols)"]


def test_the_model_loads_without_gis_dask_or_click_and_uses_its_own_code(
    saved: Path, tmp_path: Path
) -> None:
    image = images((4, 150, 130))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    report = probe(sys.executable, str(saved), image, tmp_path / "probe", env)
    assert report["refused_loaded"] == []
    assert Path(report["terraseg"]).parent == saved / "code" / "terraseg"  # the copy
    assert_equals_predict_array(saved / "artifacts" / "artifact", image, tmp_path / "probe")
    for name, message in report["errors"].items():
        assert message.startswith("ModelInputError: expected ") and "\n" not in message, name
    assert report["errors"]["bands"].endswith("got shape (1, 8, 8)")
    assert report["errors"]["float64"].endswith("got float64: convert with .astype('uint8')")


def test_where_terraseg_is_imported_the_installed_package_serves(saved: Path) -> None:
    import terraseg
    import terraseg.pipeline.pyfunc as installed

    model = mlflow.pyfunc.load_model(str(saved))
    python_model = model.unwrap_python_model()
    assert type(python_model).__module__ == "terraseg.pipeline.pyfunc"
    assert sys.modules["terraseg.pipeline.pyfunc"] is installed
    assert isinstance(python_model, installed.TerrasegPyfunc)
    assert not Path(terraseg.__file__).is_relative_to(saved)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((4, 40, 50), "uint8", None),
        ((2, 4, 40, 50), "uint8", None),
        ((4, 40, 50), "float32", None),
        ((3, 40, 50), "uint8", r"of shape \(4, rows, cols\) or \(n, 4, rows, cols\) with bands "
         r"red, green, blue, nir; got shape \(3, 40, 50\)$"),
        ((40, 50), "uint8", r"got shape \(40, 50\)$"),
        ((4, 40, 50), "float64", r"^expected dtype uint8 \(the training rasters'\) or float32, "
         r"or integers within uint8's range; got float64: convert with \.astype\('uint8'\)$"),
        ((4, 40, 50), "int64", None),  # as JSON requests arrive: integers within uint8
        ((4, 40, 50), "int16", r"^expected dtype uint8 \(the training rasters'\) or float32, "
         r"or integers within uint8's range; got int16 with values from -1 to \d+: "),
        ((4, 0, 50), "uint8", r"got the empty \(4, 0, 50\)$"),
    ],
)  # fmt: skip
def test_pyfunc_input_schema(saved: Path, shape: tuple[int, ...], dtype: str,
                             message: str | None) -> None:  # fmt: skip
    model = mlflow.pyfunc.load_model(str(saved))
    x = images(shape).astype(dtype) if 0 not in shape else np.zeros(shape, dtype)
    if dtype == "int16":
        x[0, 0, 0] = -1  # outside uint8
    if message is not None:
        with pytest.raises(ModelInputError, match=message) as caught:
            model.predict(x)
        assert "\n" not in str(caught.value)
        return
    out = model.predict(x)
    expected = predict_array(load_artifact(saved / "artifacts" / "artifact"),
                             x if x.ndim == 3 else x[1], config=FP32)  # fmt: skip
    got = out["class_map"] if x.ndim == 3 else out["class_map"][1]
    assert out["class_map"].shape == (*shape[:-3], 40, 50) and out["class_map"].dtype == np.uint8
    np.testing.assert_array_equal(got, expected.classes)


def test_nan_pixels_of_a_float32_image_get_no_class(saved: Path) -> None:
    model = mlflow.pyfunc.load_model(str(saved))
    image = images((4, 40, 50)).astype(np.float32)
    image[2, 5, 7] = np.nan
    out = model.predict(image)
    assert out["class_map"][5, 7] == 255 and not out["probabilities"][:, 5, 7].any()
    assert (out["class_map"] != 255).sum() == 40 * 50 - 1


def old_style(saved: Path, folder: Path) -> Path:
    """A copy of ``saved`` as models logged before this layout were: no code, bare imports."""
    shutil.copytree(saved, folder, ignore=shutil.ignore_patterns("code"))
    (folder / "pyfunc_entry.py").write_text(OLD_ENTRY)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    del mlmodel["flavors"]["python_function"]["code"]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (folder / "requirements.txt").write_text("terraseg==0.1.0\ntorch==2.13.0\n")
    return folder


def test_a_model_of_the_former_layout_predicts_through_terraseg(
    saved: Path, tmp_path: Path
) -> None:
    old = old_style(saved, tmp_path / "old-model")
    scenes = tiny_scenes(tmp_path / "scenes")
    runs = {}
    for name, model in [("old", old), ("artifact", saved / "artifacts" / "artifact")]:
        out = tmp_path / name
        args = ["-q", "predict", scenes.scenes[0], "--model", model, "--out", out, "--threads", 1]
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        with rasterio.open(out / f"{scenes.scenes[0].stem}_classes.tif") as src:
            runs[name] = src.read(1)
    np.testing.assert_array_equal(runs["old"], runs["artifact"])
    assert len(np.unique(runs["old"])) > 1


def fresh_venv(requirements: Path) -> Path:
    """A virtual environment with only ``requirements`` installed, kept for later runs.

    It lives in the temporary folder under a name keyed by the Python version and the
    requirements, is built under a lock and marked complete last, so an interrupted
    build is redone and concurrent runs build it once.
    """
    text = requirements.read_text()
    key = hashlib.sha256(f"{sys.version} {text}".encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"terraseg-pyfunc-venv-{key}"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "-r", str(requirements)], check=True, timeout=1800)  # fmt: skip
            (venv / "complete").write_text(text)
    return venv / "bin" / "python"


@pytest.mark.slow
def test_a_registered_model_predicts_in_a_venv_with_only_mlflow_torch_numpy(
    tmp_path: Path, sqlite_store_uri: str
) -> None:
    artifact = tiny_model_artifact(tmp_path / "artifact")
    with start_tracking(sqlite_store_uri, "tests", "pyfunc-venv", register="pyfunc-venv",
                        alias="candidate") as tracker:  # fmt: skip
        uri = tracker.log_model(artifact)
    folder, _ = fetch_model(uri, sqlite_store_uri, tmp_path / "cache")
    python = fresh_venv(folder / "requirements.txt")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": sqlite_store_uri}  # fmt: skip
    missing = subprocess.run([python, "-I", "-c", "import terraseg"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert "No module named 'terraseg'" in missing.stderr
    image = images((4, 600, 700))
    report = probe(str(python), "models:/pyfunc-venv@candidate", image, tmp_path / "probe", env)
    assert report["refused_loaded"] == [] and "/code/terraseg/" in report["terraseg"]
    assert_equals_predict_array(artifact, image, tmp_path / "probe")


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_mlflow_models_serve_predicts_json_requests(saved: Path, tmp_path: Path) -> None:
    python = fresh_venv(saved / "requirements.txt")
    port = _free_port()
    env = {"PATH": f"{python.parent}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    command = [str(python), "-m", "mlflow", "models", "serve", "-m", str(saved),
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    server = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        image = images((4, 60, 70))
        status, answer = _post(f"http://127.0.0.1:{port}/invocations",
                               {"inputs": image.tolist()})  # fmt: skip
        assert status == 200, answer
        expected = predict_array(load_artifact(saved / "artifacts" / "artifact"), image,
                                 config=FP32)  # fmt: skip
        np.testing.assert_array_equal(answer["predictions"]["class_map"], expected.classes)
        status, refused = _post(f"http://127.0.0.1:{port}/invocations",
                                {"inputs": (image / 2).tolist()})  # fmt: skip
        assert status == 400 and "got float64" in refused["stack_trace"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
