import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact, tiny_scenes

TERRASEG = str(Path(sys.executable).parent / "terraseg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return tiny_model_artifact(root / "model"), tiny_scenes(root / "scenes")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_predict_folder_then_skip_then_bad_file(data, tmp_path):
    model, scenes = data
    out = tmp_path / "out"
    result = run(
        "-q", "predict", scenes.scenes[0].parent, "--model", model, "--out", out, "--threads", "1"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [Path(r["outputs"][0]).name for r in records] == [
        "scene_000_classes.tif",
        "scene_001_classes.tif",
    ]
    again = run("-q", "predict", *scenes.scenes, "--model", model, "--out", out, "--threads", "1")
    assert all(
        json.loads(line)["skipped"] for line in again.output.splitlines() if line.startswith("{")
    )
    # another precision is another result: the output is not current for it
    fp32 = run("-q", "predict", scenes.scenes[0], "--model", model, "--out", out, "--precision",
               "fp32", "--threads", "1")  # fmt: skip
    assert fp32.exit_code == 0, fp32.output
    assert not json.loads(fp32.output.splitlines()[0])["skipped"]
    broken = tmp_path / "broken.tif"
    broken.write_text("no raster here")
    mixed = run(
        "-q", "predict", broken, scenes.scenes[0], "--model", model, "--out", out, "--overwrite"
    )
    assert mixed.exit_code == 1
    assert "broken.tif: not a readable raster" in mixed.output
    assert mixed.output.strip().endswith("Error: 1 of 2 inputs failed; the others are written")
    assert not (out / "broken_classes.tif").exists()


def test_int8_prediction_with_a_calibrated_model(data, tmp_path):
    _, scenes = data
    model = tiny_model_artifact(tmp_path / "model", calibrated=True)
    maps = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / precision
        result = run("-q", "predict", scenes.scenes[0], "--model", model, "--out", out,
                     "--precision", precision, "--threads", "1")  # fmt: skip
        assert result.exit_code == 0, result.output
        with rasterio.open(out / "scene_000_classes.tif") as src:
            maps[precision] = src.read(1)
    agreement = (maps["int8"] == maps["fp32"]).mean()
    assert 0.9 < agreement < 1.0  # measured: 0.98; the same map would mean no int8 ran


def test_inputs_with_the_same_name_are_refused_before_any_work(data, tmp_path):
    model, scenes = data
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tile.tif").write_bytes(scenes.scenes[0].read_bytes())
    out = tmp_path / "out"
    result = run("predict", tmp_path / "a", tmp_path / "b", "--model", model, "--out", out)
    assert result.exit_code == 1
    assert "a/tile.tif and " in result.output and "b/tile.tif would both write" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_usage_and_model_errors(data, tmp_path):
    model, scenes = data
    assert run("predict", scenes.scenes[0], "--out", tmp_path).exit_code == 2  # --model missing
    bad_bands = run(
        "predict", scenes.scenes[0], "--model", model, "--out", tmp_path, "--bands", "a,b"
    )
    assert bad_bands.exit_code == 2 and "1-based band numbers" in bad_bands.output
    missing = run("predict", scenes.scenes[0], "--model", tmp_path / "nope", "--out", tmp_path)
    assert missing.exit_code == 1
    nothing = run("predict", tmp_path / "*.tif", "--model", model, "--out", tmp_path)
    assert nothing.exit_code == 1 and "no raster files found" in nothing.output
    int8 = run("predict", scenes.scenes[0], "--model", model, "--out", tmp_path / "int8",
               "--precision", "int8")  # fmt: skip
    assert int8.exit_code == 1 and f"{model}: the model has no int8 calibration" in int8.output
    assert not (tmp_path / "int8").exists()


def test_killed_run_leaves_no_final_file_and_completes(data, tmp_path):
    model, _ = data
    scene = tiny_scenes(tmp_path / "big", scenes=1, size="1024x1024", resolution=1.0).scenes[0]
    out = tmp_path / "out"
    command = [TERRASEG, "-q", "predict", str(scene), "--model", str(model), "--out", str(out),
               "--block-size", "128", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180

    def blocks_written():
        return any(
            any(s.rglob("*")) for s in out.glob(".scene_000_blocks-*.partial.zarr/classes/c")
        )

    while time.monotonic() < deadline and not blocks_written():
        time.sleep(0.05)
    assert process.poll() is None  # killed mid-run, not after
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "scene_000_classes.tif").exists()
    assert all(p.name.startswith(".") for p in out.iterdir())  # only temporary names
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with rasterio.open(out / "scene_000_classes.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    # no scratch, no lock: the COG, its QGIS style and GDAL's categories and table
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_000_classes.qml",
        "scene_000_classes.tif",
        "scene_000_classes.tif.aux.xml",
    ]


@pytest.mark.slow  # a benchmark run: about 30 s on 2 cores
def test_bench_predict_over_several_files(tmp_path):
    result = run("bench", "predict", "--scene-size", "256", "--files", "2", "--repeats", "2",
                 "--workdir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "2 tiles of 512 px, 25% overlap, 2 files of 256 x 256 px" in lines[0]
    rows = {line[:26].strip(): line[26:].split() for line in lines[1:5]}
    assert set(rows) == {
        "model only (forward)",
        "baseline (naive)",
        "terraseg, malloc tuned",
        "terraseg, default malloc",
    }
    # each row: seconds, "s", megapixels per second
    assert all(float(row[0]) > 0 and float(row[2]) > 0 for row in rows.values())
    # model only before the first run and after each, and the two runs
    assert re.fullmatch(
        r"model only around the terraseg runs: [\d.]+ / [\d.]+ / [\d.]+ s; "
        r"baseline before each: [\d.]+ / [\d.]+ s; terraseg runs: [\d.]+ / [\d.]+ s",
        lines[5],
    )
    assert re.fullmatch(
        r"terraseg / model only: [\d.]+ \(runs [\d.]+-[\d.]+\); "
        r"/ baseline: [\d.]+x \(runs [\d.]+-[\d.]+x\); malloc tuning: [\d.]+x",
        lines[6],
    )
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == [f"scene_00{i}_classes.{ext}" for i in (0, 1) for ext in ("qml", "tif")]


def test_a_run_downloads_its_model_once(data, tmp_path, mlflow_server_uri, mlflow_server_log):
    """The driver resolves the URI and downloads once; LocalCluster workers load its folder.

    Counted in the server's log, across every process: one GET of the weights
    for the run (before, the driver and each worker downloaded the model), none
    for a second run into the same folder.
    """
    from terraseg.workflows.mlflow_tracking import start_tracking

    model, scenes = data
    name = f"once-{tmp_path.name}"
    with start_tracking(mlflow_server_uri, "tests", register=name, alias="candidate") as tracker:
        tracker.log_model(model)
    out = tmp_path / "out"

    def downloads_of(*extra):
        before = mlflow_server_log.read_text()
        result = run("-q", "predict", *scenes.scenes, "--model", f"models:/{name}@candidate",
                     "--tracking-uri", mlflow_server_uri, "--out", out, "--threads", "1",
                     *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        time.sleep(0.5)  # the server's last log lines
        added = mlflow_server_log.read_text()[len(before) :]
        return len(re.findall(r"GET /api/2.0/mlflow-artifacts/artifacts/\S*/weights.pt", added))

    assert downloads_of() == 1
    (cached,) = (out / ".models").iterdir()
    assert cached.name.startswith(f"models-{name}-1-") and (cached / "MLmodel").is_file()
    assert downloads_of("--overwrite") == 0
