"""Remote locations: URIs in GDAL's and fsspec's forms, paths, GDAL's S3 settings."""

import pickle
from pathlib import Path

import pytest

from terraseg.pipeline.locks import lock_path
from terraseg.pipeline.remote import (
    RemotePath,
    as_input,
    fsspec_url,
    gdal_path,
    gdal_s3_environment,
    is_remote,
    staged_file,
    staging_folder,
)


@pytest.mark.parametrize(
    ("uri", "gdal", "fsspec"),
    [
        ("s3://bucket/a/scene.tif", "/vsis3/bucket/a/scene.tif", "s3://bucket/a/scene.tif"),
        ("gs://bucket/scene.tif", "/vsigs/bucket/scene.tif", "gs://bucket/scene.tif"),
        ("/vsis3/bucket/x.zarr", "/vsis3/bucket/x.zarr", "s3://bucket/x.zarr"),
        ("https://h:8/a/s.tif", "/vsicurl/https://h:8/a/s.tif", "https://h:8/a/s.tif"),
        ("/vsicurl/http://h/s.tif", "/vsicurl/http://h/s.tif", "http://h/s.tif"),
        ("s3:/bucket/k.tif", "/vsis3/bucket/k.tif", "s3://bucket/k.tif"),  # through pathlib
    ],
)
def test_uri_forms(uri, gdal, fsspec):
    assert is_remote(uri)
    assert gdal_path(uri) == gdal
    assert fsspec_url(uri) == fsspec
    assert str(RemotePath(uri)) == gdal


def test_local_paths_are_not_remote(tmp_path):
    for local in (tmp_path / "scene.tif", "scenes/*.tif", "list.txt", "/vsimem/x.tif"):
        assert not is_remote(local)
    assert type(as_input(str(tmp_path / "a.tif"))) is type(tmp_path)


def test_a_remote_path_keeps_its_url_through_path_operations():
    path = RemotePath("http://127.0.0.1:8765/data/scene.tif")
    assert (path.name, path.stem, path.suffix) == ("scene.tif", "scene", ".tif")
    assert str(path.with_name("other.tif")) == "/vsicurl/http://127.0.0.1:8765/data/other.tif"
    assert str(path.parent / "x.tif") == "/vsicurl/http://127.0.0.1:8765/data/x.tif"
    assert path.resolve() is path and not path.exists()
    assert str(pickle.loads(pickle.dumps(path))) == str(path)
    assert {path: 1}[RemotePath(str(path))] == 1


def test_gdal_gets_the_endpoint_boto_reads():
    local = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert gdal_s3_environment(local) == {
        "AWS_S3_ENDPOINT": "127.0.0.1:9000",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_HTTPS": "NO",
    }
    assert gdal_s3_environment({**local, "AWS_S3_ENDPOINT": "other:1"}) == {}  # given: kept
    assert gdal_s3_environment({"AWS_ENDPOINT_URL": "https://s3.example.org"}) == {
        "AWS_S3_ENDPOINT": "s3.example.org",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    assert gdal_s3_environment({}) == {}


def test_remote_outputs_stage_and_lock_on_this_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRASEG_STAGING", str(tmp_path))
    folder = staging_folder("s3://bucket/out/polygons.gpkg")
    assert folder.parent == tmp_path and folder.name.endswith("-polygons.gpkg")
    assert staging_folder("/vsis3/bucket/out/polygons.gpkg") == folder  # one key per URL
    assert staged_file("s3://bucket/out/polygons.gpkg") == folder / "polygons.gpkg"
    assert lock_path(RemotePath("s3://bucket/out/polygons.gpkg")).parent == tmp_path
    assert staged_file(tmp_path / "a.gpkg") == Path(tmp_path / "a.gpkg")
