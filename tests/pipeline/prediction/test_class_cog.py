import shutil

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.transform import from_origin

from terraseg.pipeline.errors import DiskSpaceError
from terraseg.pipeline.prediction import class_cog
from terraseg.pipeline.prediction.class_cog import write_class_cog
from terraseg.pipeline.prediction.overviews import halve_mode, overview_factors

NODATA = 255
OPTIONS = {"compress": "deflate", "blocksize": 512}
COLORS = {0: (10, 20, 30, 255), 1: (220, 40, 40, 255), 3: (1, 2, 3, 255)}


def reference_mode(pixels, nodata):
    """Pixel by pixel: the most frequent valid value of each 2 x 2 cell, first on a tie."""
    rows, cols = pixels.shape
    out = np.full(((rows + 1) // 2, (cols + 1) // 2), nodata, np.uint8)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            cell = [int(v) for v in pixels[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].ravel()]
            valid = [v for v in cell if v != nodata]
            if valid:
                out[r, c] = max(valid, key=lambda v: (valid.count(v), -valid.index(v)))
    return out


@pytest.mark.parametrize("classes", [4, 15, 40])  # packed lookup, its limit, comparisons
@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 5), (33, 18)])
def test_halving_takes_the_most_frequent_valid_class(classes, shape):
    rng = np.random.default_rng(classes + shape[0])
    for _ in range(20):
        pixels = rng.integers(0, min(classes, 4), shape).astype(np.uint8)
        pixels += np.uint8(classes - min(classes, 4))  # the largest ids too
        pixels[rng.random(shape) < 0.3] = NODATA
        np.testing.assert_array_equal(
            halve_mode(pixels, NODATA, classes), reference_mode(pixels, NODATA)
        )


def test_halving_keeps_nodata_only_where_all_four_are_nodata():
    pixels = np.array([[NODATA, NODATA, NODATA, 2], [NODATA, NODATA, 1, 1]], np.uint8)
    assert halve_mode(pixels, NODATA, 3).tolist() == [[NODATA, 1]]


def test_overviews_stop_once_a_level_fits_in_one_block():
    assert overview_factors(512, 512, 512) == []
    assert overview_factors(513, 10, 512) == [2]
    assert overview_factors(2048, 2048, 512) == [2, 4]
    assert overview_factors(300, 4097, 512) == [2, 4, 8]


def blobs(shape, classes, seed=0):
    """A class map of smooth regions, like a model's, with a nodata corner."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (shape[0] // 16 + 1, shape[1] // 16 + 1))
    pixels = coarse.repeat(16, axis=0).repeat(16, axis=1)[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.05
    pixels[noise] = rng.integers(0, classes, int(noise.sum()))
    pixels[:70, :90] = NODATA
    return pixels.astype(np.uint8)


def write(out, read_rows, profile, classes, tags=None):
    write_class_cog(
        out,
        read_rows,
        profile,
        classes=classes,
        nodata=NODATA,
        colormap=COLORS,
        tags=tags or {},
        description="class",
        options=OPTIONS,
    )


def test_cog_has_the_map_its_mode_overviews_and_the_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(class_cog, "STRIP_ROWS", 100)  # several strips, the last one short
    shape = (1301, 1100)
    pixels = blobs(shape, 4)
    profile = {
        "height": shape[0],
        "width": shape[1],
        "crs": CRS.from_epsg(4326),  # axis order latitude first in the EPSG definition
        "transform": from_origin(10.0, 50.0, 1e-4, 1e-4),
    }
    out = tmp_path / "classes.tif"
    write(out, lambda a, b: pixels[a:b], profile, 4, {"TERRASEG_MODEL": "models:/roofs/3"})
    assert [p.name for p in tmp_path.iterdir()] == ["classes.tif"]  # no staging left
    with rasterio.open(out) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.crs == profile["crs"] and cog.transform == profile["transform"]
        assert cog.bounds.left == 10.0 and cog.bounds.top == 50.0
        assert cog.nodata == NODATA and cog.descriptions == ("class",)
        assert cog.tags()["TERRASEG_MODEL"] == "models:/roofs/3"
        assert {k: cog.colormap(1)[k] for k in COLORS} == COLORS
        assert cog.profile["compress"] == "deflate" and cog.block_shapes == [(512, 512)]
        np.testing.assert_array_equal(cog.read(1), pixels)
        assert cog.overviews(1) == [2, 4]
    expected = pixels
    for level in range(2):
        expected = reference_mode(expected, NODATA)
        with rasterio.open(out, overview_level=level) as overview:
            np.testing.assert_array_equal(overview.read(1), expected)


def test_overviews_agree_with_gdal_mode_resampling(tmp_path):
    shape = (1100, 1036)  # GDAL's COG driver rounds odd sizes down, gdaladdo and terraseg up
    pixels = blobs(shape, 5, seed=3)
    profile = {
        "height": shape[0],
        "width": shape[1],
        "crs": None,
        "transform": from_origin(0, 0, 1, 1),
    }
    ours = tmp_path / "ours.tif"
    write(ours, lambda a, b: pixels[a:b], profile, 5)
    source = tmp_path / "source.tif"
    with rasterio.open(
        source, "w", driver="GTiff", count=1, dtype="uint8", nodata=NODATA, **profile
    ) as dst:
        dst.write(pixels[None])
    gdal = tmp_path / "gdal.tif"
    rasterio.shutil.copy(source, gdal, driver="COG", overview_resampling="mode", **OPTIONS)
    for level in range(len(overview_factors(*shape, 512))):
        with (
            rasterio.open(ours, overview_level=level) as a,
            rasterio.open(gdal, overview_level=level) as b,
        ):
            agree = (a.read(1) == b.read(1)).mean()
        assert agree > 0.99  # cells with a tie may go either way


def test_a_failed_read_leaves_no_output_and_no_staging(tmp_path):
    def failing(start, stop):
        if start:
            raise OSError("scratch chunk missing")
        return np.zeros((stop - start, 600), np.uint8)

    profile = {"height": 2100, "width": 600, "crs": None, "transform": from_origin(0, 0, 1, 1)}
    with pytest.raises(OSError, match="scratch chunk missing"):
        write(tmp_path / "classes.tif", failing, profile, 2)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        class_cog.shutil, "disk_usage", lambda folder: usage._replace(free=3 * 2**20)
    )
    profile = {"height": 2048, "width": 2048, "crs": None, "transform": from_origin(0, 0, 1, 1)}
    with pytest.raises(DiskSpaceError, match=r"7.88 MiB needed to stage .*, 3.00 MiB free; free"):
        write(tmp_path / "classes.tif", lambda a, b: np.zeros((b - a, 2048), np.uint8), profile, 2)
    assert list(tmp_path.iterdir()) == []
