from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner

from terraseg.pipeline.classes import class_table, write_classes
from terraseg.pipeline.locks import output_lock
from terraseg.workflows.cli.main import cli
from tests.vectorize_data import blobs, gpkg_content, rings, write_classmap


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def classmap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classmap")
    return write_classmap(folder / "map.tif", blobs((90, 110), 4, seed=5))


def test_real_scheduler_gives_same_file_as_local_cluster(
    classmap: Path, tmp_path: Path, dask_scheduler_address: str
) -> None:
    local, remote = tmp_path / "local.gpkg", tmp_path / "remote.gpkg"
    common = ["--block-size", "32", "--fill-holes", "2", "--simplify", "0.5"]
    code, output = invoke("vectorize", str(classmap), "-o", str(local), "--workers", "2", *common)
    assert code == 0, output
    assert "polygons" in output
    code, output = invoke(
        "vectorize",
        str(classmap),
        "-o",
        str(remote),
        "--scheduler",
        dask_scheduler_address,
        *common,
    )
    assert code == 0, output
    assert gpkg_content(local) == gpkg_content(remote)
    assert not list(tmp_path.glob(".*"))  # no scratch or partial files left


def test_config_file_and_overrides(
    classmap: Path, tmp_path: Path, dask_scheduler_address: str
) -> None:
    config = tmp_path / "v.yaml"
    config.write_text("block_size: 40\nlayer_per_class: true\ndrop_background: true\n")
    classes = tmp_path / "classes.yaml"
    write_classes(class_table([(0, "bg", (0, 0, 0)), (1, "a", (9, 9, 9)), (2, "b", (1, 2, 3)),
                               (3, "c", (4, 5, 6))]), classes)  # fmt: skip
    out = tmp_path / "o.gpkg"
    code, output = invoke(
        "vectorize", str(classmap), "-o", str(out), "--config", str(config), "--classes",
        str(classes), "--scheduler", dask_scheduler_address, "--min-area", "1",
    )  # fmt: skip
    assert code == 0, output
    assert [n for n, k in pyogrio.list_layers(out) if k] == ["a", "b", "c"]


def test_a_raster_given_twice_gives_the_polygons_once(
    classmap: Path, tmp_path: Path, dask_scheduler_address: str
) -> None:
    once, twice = tmp_path / "once.gpkg", tmp_path / "twice.gpkg"
    same = classmap.parent / "." / classmap.name  # the same file, spelled differently
    for out, rasters in ((once, [classmap]), (twice, [classmap, same])):
        code, output = invoke(
            "vectorize", *map(str, rasters), "-o", str(out), "--block-size", "32",
            "--scheduler", dask_scheduler_address,
        )  # fmt: skip
        assert code == 0, output
    assert gpkg_content(twice) == gpkg_content(once)
    (polygons,) = gpkg_content(once)["layers"].values()  # type: ignore[attr-defined]
    assert f"{len(polygons)} polygons" in output


def test_an_output_another_run_writes_is_refused_before_a_cluster_starts(
    classmap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terraseg.workflows.cluster

    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(terraseg.workflows.cluster, "dask_client", no_cluster)
    out = tmp_path / "o.gpkg"
    with output_lock(out) as holder:
        code, output = invoke("vectorize", str(classmap), "-o", str(out))
    assert code == 1 and output.strip().count("\n") == 0
    assert "another terraseg run" in output and f"pid {holder.pid}" in output
    assert not out.exists()


def test_bad_config_key_is_one_line(classmap: Path, tmp_path: Path) -> None:
    config = tmp_path / "v.yaml"
    config.write_text("blocksize: 40\n")
    code, output = invoke(
        "vectorize", str(classmap), "-o", str(tmp_path / "o.gpkg"), "--config", str(config)
    )
    assert code == 1
    assert "blocksize: unknown key" in output and "block_size" in output


def test_float_raster_without_classes_exits_1(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "f.tif", np.ones((20, 20), np.float32))
    out = tmp_path / "f.gpkg"
    code, output = invoke("vectorize", str(raster), "-o", str(out))
    assert code == 1
    assert output.strip().count("\n") == 0
    assert "f.tif" in output and "--classes" in output
    assert not out.exists()


def test_missing_class_values_are_listed(tmp_path: Path, dask_scheduler_address: str) -> None:
    raster = write_classmap(tmp_path / "r.tif", rings((40, 40)))
    classes = tmp_path / "classes.yaml"
    write_classes(class_table([(0, "a", (0, 0, 0)), (1, "b", (1, 1, 1))]), classes)
    out = tmp_path / "r.gpkg"
    code, output = invoke(
        "vectorize", str(raster), "-o", str(out), "--classes", str(classes),
        "--scheduler", dask_scheduler_address,
    )  # fmt: skip
    assert code == 1
    assert "r.tif" in output and "values 2, 3, 4 are not in the classes file" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.yaml", "r.tif"]


def test_existing_output_without_overwrite_exits_1(classmap: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.gpkg"
    out.write_text("x")
    code, output = invoke("vectorize", str(classmap), "-o", str(out))
    assert code == 1 and "--overwrite" in output
    assert out.read_text() == "x"


def test_confidence_count_must_match(classmap: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "vectorize", str(classmap), str(classmap), "-o", str(tmp_path / "o.gpkg"),
        "--confidence", str(classmap),
    )  # fmt: skip
    assert code == 1 and "1 confidence rasters for 2 class rasters" in output


def test_bench_reports_missing_gdal_polygonize(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, output = invoke("bench", "vectorize", "--scene-size", "64")
    assert code == 1
    assert "gdal_polygonize not found" in output and "apt-get install -y gdal-bin" in output


@pytest.mark.slow
def test_bench_agrees_with_gdal_polygonize(tmp_path: Path) -> None:
    import shutil

    if not any(shutil.which(n) for n in ("gdal_polygonize", "gdal_polygonize.py")):
        pytest.skip("gdal_polygonize is not installed (apt-get install -y gdal-bin)")
    code, output = invoke("bench", "vectorize", "--scene-size", "600", "--block-size", "256",
                          "--workdir", str(tmp_path))  # fmt: skip
    assert code == 0, output
    assert "same polygon count and area per class: yes" in output
