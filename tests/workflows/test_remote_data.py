"""Data on the web and on object storage, through real servers on 127.0.0.1.

Rasters read through ``/vsicurl/`` from an HTTP server that answers range requests,
and a chain of stages with the store and the outputs on moto's S3 server, each
compared with the same run on the local disk.
"""

import json
import os

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import zarr
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact, tiny_scenes
from tests.remote_servers import moto_s3, range_server

TRAIN = ["--no-track", "--width-multiplier", "0.25", "--members", "1",
         "--crop-size", "32", "--batch-size", "2",
         "--samples-per-epoch", "4", "--epochs", "1", "--num-workers", "0",
         "--seed", "3"]  # fmt: skip


def run(*args):
    return CliRunner().invoke(cli, ["-q", *(str(a) for a in args)])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(autouse=True)
def _staging_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRASEG_STAGING", str(tmp_path / "staging"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    return tiny_model_artifact(root / "model"), tiny_scenes(root / "scenes"), root


@pytest.fixture(scope="module")
def s3(data):
    with moto_s3(data[2]) as endpoint:
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir("bkt")
        scenes = data[1]
        for path in [*scenes.scenes, *scenes.labels, scenes.classes]:
            fs.put_file(str(path), f"bkt/in/{path.name}")
        yield fs, endpoint


def pixels(path):
    with rasterio.open(path) as src:
        return src.read()


def store_arrays(location):
    root = zarr.open_group(location, mode="r")
    found = {"index": root["scenes"].attrs.asdict()}
    for name in sorted(root["scenes"].group_keys()):
        for array in ("image", "label", "valid"):
            found[f"{name}/{array}"] = np.asarray(root[f"scenes/{name}/{array}"][...])
    found["split"] = [
        [t["split"] for t in root[f"scenes/{name}"].attrs["tiles"]]
        for name in sorted(root["scenes"].group_keys())
    ]
    return found


def assert_same_store(local, remote):
    ours, theirs = store_arrays(str(local)), store_arrays(remote)
    assert ours.keys() == theirs.keys()
    for key in ours:
        if isinstance(ours[key], np.ndarray):
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
        else:
            assert ours[key] == theirs[key], key


def polygons(path):
    frame = gpd.read_file(path, layer="polygons")
    return frame.drop(columns=[c for c in frame.columns if c in ("source",)])


def test_rasters_over_http_with_range_requests(data, tmp_path):
    model, scenes, _ = data
    ok("predict", *scenes.scenes, "--model", model, "--out", tmp_path / "local", "--threads", 1)
    with range_server(scenes.scenes[0].parent, tmp_path / "requests.log") as server:
        listed = tmp_path / "list.txt"
        listed.write_text(f"# the second scene\n{server.url}/{scenes.scenes[1].name}\n")
        direct = f"/vsicurl/{server.url}/{scenes.scenes[0].name}"
        result = ok("predict", direct, listed, "--model", model, "--out", tmp_path / "web",
                    "--threads", 1)  # fmt: skip
        inputs = [json.loads(line)["input"] for line in result.output.splitlines()]
        assert inputs == [direct, f"/vsicurl/{server.url}/{scenes.scenes[1].name}"]
        for scene in scenes.scenes:
            assert server.ranged(scene.name), f"no range request for {scene.name}"
            name = f"{scene.stem}_classes.tif"
            np.testing.assert_array_equal(
                pixels(tmp_path / "web" / name), pixels(tmp_path / "local" / name)
            )
        again = ok("predict", direct, "--model", model, "--out", tmp_path / "web")
        assert json.loads(again.output)["skipped"]  # the same object: current already


def test_tile_and_evaluate_with_label_rasters_over_http(data, tmp_path):
    scenes = tiny_scenes(tmp_path / "scenes", labels="raster", scenes=1)
    folder, truth = scenes.scenes[0].parent, scenes.labels[0]
    tile = ["--classes", scenes.classes, "--tile-size", 64, "--workers", 1]
    ok("tile", *scenes.scenes, "--labels", truth, "--out", tmp_path / "l.zarr", *tile)
    ok("predict", *scenes.scenes, "--model", data[0], "--out", folder, "--threads", 1)
    classes = folder / f"{scenes.scenes[0].stem}_classes.tif"
    local = ok("evaluate", classes, "--truth", truth, "--workers", 1)
    with range_server(folder, tmp_path / "requests.log") as server:
        image, labels = (f"/vsicurl/{server.url}/{p.name}" for p in (scenes.scenes[0], truth))
        ok("tile", image, "--labels", labels, "--out", tmp_path / "web.zarr", *tile)
        assert server.ranged(truth.name)
        web = ok("evaluate", f"{server.url}/{classes.name}", "--truth", labels, "--workers", 1)
        assert server.ranged(classes.name)
    assert_same_store(tmp_path / "l.zarr", str(tmp_path / "web.zarr"))
    assert web.output == local.output and "mean IoU" in web.output


def test_store_and_outputs_on_s3_equal_the_local_run(data, s3, tmp_path):
    model, scenes, _ = data
    fs, _ = s3
    tile = ["--classes", scenes.classes, "--tile-size", 64, "--workers", 1]
    ok("tile", *scenes.scenes, "--labels", scenes.labels[0], "--out", tmp_path / "l.zarr", *tile)
    ok("tile", "s3://bkt/in/", "--labels", "s3://bkt/in/labels.gpkg", "--out",
       "s3://bkt/t/store.zarr", *tile)  # fmt: skip
    assert_same_store(tmp_path / "l.zarr", "s3://bkt/t/store.zarr")
    assert not list((tmp_path / "staging").glob("*/zarr.json"))  # the staged copy is gone
    fs.rm_file("bkt/t/store.zarr/zarr.json")  # as an upload cut short leaves it
    half = run("train", "--data", "s3://bkt/t/store.zarr", "--out", tmp_path / "run", *TRAIN)
    assert "Error: /vsis3/bkt/t/store.zarr: not a Zarr store" in half.output
    redone = ok("tile", "s3://bkt/in/", "--labels", "s3://bkt/in/labels.gpkg", "--out",
                "s3://bkt/t/store.zarr", *tile)  # fmt: skip
    assert json.loads(redone.output)["skipped"] == 0
    assert_same_store(tmp_path / "l.zarr", "s3://bkt/t/store.zarr")

    ok("predict", *scenes.scenes, "--model", model, "--out", tmp_path / "pred", "--threads", 1)
    listed = tmp_path / "list.txt"
    listed.write_text("s3://bkt/in/scene_000.tif\n/vsis3/bkt/in/scene_001.tif\n")
    result = ok("predict", listed, "--model", model, "--out", "s3://bkt/t/pred", "--threads", 1)
    outputs = [o for line in result.output.splitlines() for o in json.loads(line)["outputs"]]
    assert sorted(fs.ls("bkt/t/pred")) == sorted(o.removeprefix("/vsis3/") for o in outputs)
    for scene in scenes.scenes:
        name = f"{scene.stem}_classes.tif"
        np.testing.assert_array_equal(
            pixels(f"/vsis3/bkt/t/pred/{name}"), pixels(tmp_path / "pred" / name)
        )
    again = ok("predict", listed, "--model", model, "--out", "s3://bkt/t/pred")
    assert all(json.loads(line)["skipped"] for line in again.output.splitlines())

    ok("vectorize", tmp_path / "pred", "-o", tmp_path / "polygons.gpkg")
    ok("vectorize", "s3://bkt/t/pred/", "-o", "s3://bkt/t/polygons.gpkg")
    ours, theirs = polygons(tmp_path / "polygons.gpkg"), polygons("/vsis3/bkt/t/polygons.gpkg")
    assert len(ours) > 0
    assert ours.drop(columns="geometry").equals(theirs.drop(columns="geometry"))
    assert all(a.equals_exact(b, 0) for a, b in zip(ours.geometry, theirs.geometry, strict=True))
    import terraseg  # the Python API takes the same URIs as text

    summary = terraseg.vectorize(["s3://bkt/t/pred/"], "s3://bkt/t/api.gpkg", workers=1)
    assert str(summary.path) == "/vsis3/bkt/t/api.gpkg" and summary.polygons == len(ours)
    refused = run("vectorize", "s3://bkt/t/pred/", "-o", "s3://bkt/t/polygons.gpkg")
    assert refused.exit_code == 1
    assert "s3/bkt/t/polygons.gpkg: output exists; pass --overwrite" in refused.output


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://bkt/in/missing.tif", "no such object, or no access to it"),
        ("s3://no-such-bucket/scene.tif", "bucket does not exist"),
        ("HTTP/missing.tif", "404"),
    ],
)
def test_a_missing_remote_input_is_one_line_and_uploads_nothing(data, s3, tmp_path, uri, reason):
    model, scenes, _ = data
    fs, _ = s3
    with range_server(scenes.scenes[0].parent, tmp_path / "requests.log") as server:
        uri = uri.replace("HTTP", server.url)
        result = run("predict", uri, "--model", model, "--out", "s3://bkt/bad")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: /vsi") and uri.split("://")[1] in errors[0]
    assert reason in errors[0]
    assert not fs.exists("bkt/bad")


def test_a_store_missing_from_the_bucket_is_one_line(s3, tmp_path):
    result = run("train", "--data", "s3://bkt/nothing.zarr", "--out", tmp_path / "run", *TRAIN)
    assert result.exit_code == 1
    assert "Error: /vsis3/bkt/nothing.zarr: not a Zarr store" in result.output


@pytest.mark.slow
def test_tile_train_predict_on_s3_equal_the_local_run(data, s3, tmp_path):
    """The whole chain: a model trained from the bucket's store predicts what the local one does."""
    _, scenes, _ = data
    fs, _ = s3
    tile = ["--classes", scenes.classes, "--tile-size", 64, "--workers", 1]
    ok("tile", *scenes.scenes, "--labels", scenes.labels[0], "--out", tmp_path / "l.zarr", *tile)
    ok("tile", "s3://bkt/in/", "--labels", "s3://bkt/in/labels.gpkg", "--out",
       "s3://bkt/chain/store.zarr", *tile)  # fmt: skip
    ok("train", "--data", tmp_path / "l.zarr", "--out", tmp_path / "run", *TRAIN)
    ok("train", "--data", "s3://bkt/chain/store.zarr", "--out", "s3://bkt/chain/run", *TRAIN)
    assert fs.exists("bkt/chain/run/summary.json")
    again = run("train", "--data", "s3://bkt/chain/store.zarr", "--out", "s3://bkt/chain/run",
                *TRAIN)  # fmt: skip
    assert again.exit_code == 1 and "s3/bkt/chain/run: holds a run" in again.output
    fs.get("bkt/chain/run/model/", str(tmp_path / "run-s3" / "model"), recursive=True)
    for run_dir, out in (
        (tmp_path / "run", tmp_path / "pred"),
        (tmp_path / "run-s3", "s3://bkt/chain/pred"),
    ):
        ok("predict", *scenes.scenes, "--model", run_dir / "model", "--out", out, "--threads", 1)
    for scene in scenes.scenes:
        name = f"{scene.stem}_classes.tif"
        np.testing.assert_array_equal(
            pixels(f"/vsis3/bkt/chain/pred/{name}"), pixels(tmp_path / "pred" / name)
        )
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        ("s3://bkt/in/missing.tif", "not a readable raster (no such object, or no access to it)"),
        ("s3://bkt/nothing-here/", "no raster files found"),
    ],
)
def test_tile_of_a_missing_remote_input_uploads_no_store(data, s3, tmp_path, images, reason):
    scenes = data[1]
    fs, _ = s3
    result = run("tile", images, "--labels", "s3://bkt/in/labels.gpkg", "--classes",
                 scenes.classes, "--out", "s3://bkt/bad.zarr", "--tile-size", 64)  # fmt: skip
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and reason in errors[0]
    assert images.split("://")[1].rstrip("/") in errors[0]
    assert not fs.exists("bkt/bad.zarr")


@pytest.mark.parametrize(
    ("args", "named", "what"),
    [
        (["evaluate", "x.tif", "--truth", "y.tif", "--out", "s3://b/e.json"], "s3://b/e.json",
         "the evaluation report"),
        (["tile", "x.tif", "--labels", "l.gpkg", "--out", "s.zarr", "--export-index",
          "s3://b/i.gpkg"], "s3://b/i.gpkg", "the tile index"),
    ],
)  # fmt: skip
def test_reports_for_a_bucket_are_refused_before_any_work(tmp_path, monkeypatch, args, named, what):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {named}: {what} is written to this disk only; give a local path"
    )
    assert list(tmp_path.iterdir()) == []
