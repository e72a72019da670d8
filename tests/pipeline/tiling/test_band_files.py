"""tile takes scenes as band files, as predict does, with their label rasters matched by name.

The cases of the dev set, generated small: Landsat scene folders
(``<scene>_b3.tif`` ... with -9999 fill and a ``<scene>_fmask.tif`` beside them)
and a Sentinel-2 scene of 10 m and 20 m band files with one label raster for it.
"""

import json
import os

import numpy as np
import pytest
import rasterio
import zarr
from click.testing import CliRunner

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.rasters import SourceIdentity
from terraseg.pipeline.tiling.labels import match_label_rasters
from terraseg.workflows.cli.main import cli
from tests.pipeline.test_bandfiles import make_scene, write_band

CLASSES = "classes:\n" + "".join(
    f"- {{id: {i}, name: {n}}}\n" for i, n in enumerate(["clear", "water", "shadow"])
)


def landsat_scene(folder, name, seed):
    """Bands b3, b4, b5 (int16, -9999 stripes) and the scene's CFmask (255 fill)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for band in ("b3", "b4", "b5"):
        data = rng.integers(100, 3000, (40, 40)).astype(np.int16)
        data[:, 10:12] = -9999  # an SLC-off stripe
        write_band(folder / f"{name}_{band}.tif", data, 30.0, nodata=-9999)
    mask = rng.integers(0, 3, (40, 40)).astype(np.uint8)
    mask[:, 10:12] = 255
    write_band(folder / f"{name}_fmask.tif", mask, 30.0)


def tile(*args):
    return CliRunner().invoke(cli, ["-q", "tile", *map(str, args), "--workers", "1"])


def test_landsat_band_files_with_their_fmask_rasters(tmp_path):
    for index in range(2):
        landsat_scene(tmp_path / "series" / f"scene{index}", f"LE7_{index}", index)
    (tmp_path / "classes.yaml").write_text(CLASSES)
    store = tmp_path / "out" / "landsat.zarr"
    common = [
        "--band-files",
        "b3,b4,b5",
        "--nodata",
        "-9999",
        "--classes",
        tmp_path / "classes.yaml",
    ]
    labels = tmp_path / "series" / "*" / "*_fmask.tif"
    result = tile(tmp_path / "series", *common, "--labels", labels, "--out", store,
                  "--tile-size", "16", "--val-fraction", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scenes"] == 2
    stacks = tmp_path / "out" / ".band-stacks" / "landsat.zarr"
    assert sorted(p.name for p in stacks.iterdir()) == ["LE7_0.vrt", "LE7_1.vrt"]
    scene = zarr.open_group(str(store), mode="r")["scenes/LE7_1"]
    assert scene.attrs["band_names"] == ["LE7_1_b3", "LE7_1_b4", "LE7_1_b5"]
    assert not scene["valid"][:, 10:12].any() and scene["valid"][:, :10].all()
    with rasterio.open(tmp_path / "series" / "scene1" / "LE7_1_fmask.tif") as src:
        mask = src.read(1)
    np.testing.assert_array_equal(scene["label"][:, :10], mask[:, :10])  # ids 0..2 = indices

    # a band file replaced under an unchanged VRT makes its scene current no more
    band = tmp_path / "series" / "scene0" / "LE7_0_b4.tif"
    before = SourceIdentity.of(stacks / "LE7_0.vrt").to_dict()
    os.utime(band, ns=(1, 1))
    assert SourceIdentity.of(stacks / "LE7_0.vrt").to_dict() != before
    result = tile(tmp_path / "series", *common, "--labels", labels, "--out", store,
                  "--tile-size", "16", "--val-fraction", "0")  # fmt: skip
    assert json.loads(result.output)["skipped"] == 1, result.output


def test_sentinel2_band_files_with_one_label_raster(tmp_path):
    make_scene(tmp_path / "IMG_DATA", "T33UUU_20170216", size=64)
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 32:] = 2  # ids 0 (unlabelled, the raster's nodata) and 2
    write_band(tmp_path / "osm_labels.tif", labels, 10.0, nodata=0)
    (tmp_path / "classes.yaml").write_text(
        "classes:\n- {id: 2, name: forest}\n- {id: 7, name: water}\n"
    )
    store = tmp_path / "s2.zarr"
    result = tile(tmp_path / "IMG_DATA", "--band-files", "B02,B03,B04,B11", "--labels",
                  tmp_path / "osm_labels.tif", "--classes", tmp_path / "classes.yaml",
                  "--out", store, "--tile-size", "16", "--split-block", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    scene = zarr.open_group(str(store), mode="r")["scenes/T33UUU_20170216"]
    assert scene["image"].shape == (4, 64, 64)  # the 20 m band on the 10 m grid
    assert set(np.unique(scene["label"][...]).tolist()) == {0, 255}  # id 2 is output 0
    result = tile(tmp_path / "IMG_DATA", "--band-files", "B02", "--pairs", tmp_path, tmp_path,
                  "--out", store)  # fmt: skip
    assert result.exit_code == 2 and "--band-files takes scene folders" in result.output


def test_label_rasters_match_scenes_by_name_prefix(tmp_path):
    images = [tmp_path / "LE7_0.vrt", tmp_path / "LE7_1.vrt"]
    labels = [tmp_path / "a" / "LE7_1_fmask.tif", tmp_path / "a" / "LE7_0_fmask.tif"]
    assert match_label_rasters(images, labels) == dict(zip(images, labels[::-1], strict=True))
    labels.append(tmp_path / "a" / "LE7_0_labels.tif")  # a known suffix comes first
    assert match_label_rasters(images, labels)[images[0]] == labels[2]
    labels[2] = tmp_path / "a" / "LE7_1_qa.tif"
    with pytest.raises(InputError, match=r"LE7_1\.vrt: several label rasters match this image"):
        match_label_rasters(images, labels)


def test_evaluate_finds_fmask_truth_through_a_glob(tmp_path):
    """Class maps named after band-file scenes, truth in the scene folders by glob."""
    (tmp_path / "pred").mkdir()
    for index in range(2):
        landsat_scene(tmp_path / "series" / f"scene{index}", f"LE7_{index}", index)
        fmask = tmp_path / "series" / f"scene{index}" / f"LE7_{index}_fmask.tif"
        with rasterio.open(fmask) as src:
            profile, mask = {**src.profile, "nodata": 255}, src.read(1)
        with rasterio.open(tmp_path / "pred" / f"LE7_{index}_classes.tif", "w", **profile) as dst:
            dst.write(mask[None])
    (tmp_path / "classes.yaml").write_text(CLASSES)
    result = CliRunner().invoke(cli, ["-q", "evaluate", str(tmp_path / "pred" / "*_classes.tif"),
                                      "--truth", str(tmp_path / "series" / "*" / "*_fmask.tif"),
                                      "--classes", str(tmp_path / "classes.yaml"),
                                      "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pixel accuracy  1.000" in result.output
