"""The dev set's real rasters end to end from their band files (slow; skipped without it).

Build it with ``python /work/shared/realdata/build_devset.py /tmp/devset`` (or set
``TERRASEG_DEVSET``); docs/tile.md ("Real data") records full runs.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli

DEVSET = Path(os.environ.get("TERRASEG_DEVSET", "/tmp/devset"))
S2 = DEVSET / "sentinel2_brandenburg_osm"
LANDSAT = DEVSET / "landsat_fmask_timeseries"
OSM_CLASSES = ["farm", "forest", "grass", "meadow", "residential", "scrub", "water", "wetland"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not S2.is_dir() or not LANDSAT.is_dir(), reason=f"no dev set at {DEVSET}"),
]


def terraseg(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_sentinel2_band_files_with_osm_land_use_1_to_8(tmp_path):
    classes = tmp_path / "classes.yaml"
    classes.write_text(
        "classes:\n"
        + "".join(f"- {{id: {i}, name: {n}}}\n" for i, n in enumerate(OSM_CLASSES, start=1))
        + "ignore: [0]\n"
    )
    bands = ["--band-files", "B02,B03,B04,B08"]
    summary = json.loads(terraseg("tile", S2 / "original" / "IMG_DATA", *bands, "--labels",
                                  S2 / "osm_landuse_labels_10m.tif", "--classes", classes,
                                  "--out", tmp_path / "s2.zarr", "--tile-size", "256",
                                  "--split-block", "2", "--workers", "2"))  # fmt: skip
    assert (summary["scenes"], summary["tiles"]) == (1, 18) and summary["val"] > 0
    store = zarr.open_group(str(tmp_path / "s2.zarr"), mode="r")
    assert store.attrs["class_index"] == {str(i): i - 1 for i in range(1, 9)}
    terraseg("train", "--data", tmp_path / "s2.zarr", "--out", tmp_path / "run", "--epochs", "1",
             "--batch-size", "2", "--crop-size", "64", "--samples-per-epoch", "4",
             "--num-workers", "0", "--accelerator", "cpu", "--width-multiplier", "0.25",
             "--no-track")  # fmt: skip
    terraseg("predict", S2 / "original" / "IMG_DATA", *bands, "--model", tmp_path / "run" / "model",
             "--out", tmp_path / "pred", "--device", "cpu")  # fmt: skip
    with rasterio.open(tmp_path / "pred" / "T33UUU_20170216T102101_classes.tif") as src:
        assert set(np.unique(src.read(1)).tolist()) <= {*range(1, 9), 255}


def test_landsat_band_files_with_fmask_and_fill(tmp_path):
    (tmp_path / "classes.yaml").write_text(
        "classes:\n"
        + "".join(
            f"- {{id: {i}, name: {n}}}\n"
            for i, n in enumerate(["clear", "water", "shadow", "snow", "cloud"])
        )
    )
    scenes = sorted(p for p in LANDSAT.iterdir() if p.is_dir())[:6]
    summary = json.loads(terraseg("tile", *scenes, "--band-files", "b3,b4,b5", "--nodata", "-9999",
                                  "--labels", LANDSAT / "*" / "*_fmask.tif", "--classes",
                                  tmp_path / "classes.yaml", "--out", tmp_path / "landsat.zarr",
                                  "--tile-size", "32", "--workers", "2"))  # fmt: skip
    assert summary["scenes"] == 6 and summary["split_block"] < 4 and summary["val"] > 0
    scene = zarr.open_group(str(tmp_path / "landsat.zarr"), mode="r")[f"scenes/{scenes[0].name}"]
    assert scene.attrs["nodata"] == -9999 and not scene["valid"][...].all()  # SLC-off fill
