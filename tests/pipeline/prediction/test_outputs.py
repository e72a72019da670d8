"""The prediction COGs and their QGIS styles, as GIS tools read them back."""

import struct
import xml.etree.ElementTree as ET

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from terraseg.pipeline.classes import CLASSES_TAG, class_table
from terraseg.pipeline.grid import Window
from terraseg.pipeline.prediction.outputs import (
    OutputPaths,
    assemble,
    create_scratch,
    is_current,
    write_block,
)

# Names a hand-written XML file would break on; ids with a gap, as a model may have.
TABLE = class_table([(0, "bare & rock", (1, 2, 3)), (2, 'roof "flat" <new>', (220, 40, 40))])
SHAPE = (40, 56)
PROFILE = {
    "height": SHAPE[0],
    "width": SHAPE[1],
    "crs": CRS.from_epsg(32633),
    "transform": from_origin(500000, 4650000, 2, 2),
}
TAGS = {"TERRASEG_MODEL": "models:/roofs/1"}
PHOTOMETRIC_TAG, MINISBLACK, RGB = 262, 1, 2


def predicted(tmp_path, dtype, shape=SHAPE):
    """Outputs of a 2-class prediction (3 probability bands), nodata in the first rows."""
    paths = OutputPaths.for_input(tmp_path, tmp_path / "scene.tif", True, "run1")
    create_scratch(paths, shape, shape, (1, 1), 2, dtype)
    rng = np.random.default_rng(0)
    p = rng.random((2, *shape)).astype(np.float32)
    p /= p.sum(axis=0)
    classes = np.where(p[1] > p[0], 2, 0).astype(np.uint8)
    classes[:4] = 255
    write_block(paths, (0, 0), Window(0, 0, *shape), classes, p, dtype)
    profile = {**PROFILE, "height": shape[0], "width": shape[1]}
    assemble(paths, profile, TABLE, TAGS)
    return paths, p


def photometric(path):
    """The PhotometricInterpretation tag of the first image of a classic or big TIFF."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    ifd = struct.unpack(order + offset_fmt, data[8:16] if big else data[4:8])[0]
    count = struct.unpack_from(order + count_fmt, data, ifd)[0]
    start = ifd + (8 if big else 2)
    for k in range(count):
        tag, _type = struct.unpack_from(order + "HH", data, start + k * entry_size)
        if tag == PHOTOMETRIC_TAG:
            return struct.unpack_from(
                order + "H", data, start + k * entry_size + (12 if big else 8)
            )[0]
    raise AssertionError("no PhotometricInterpretation tag")


def palette(qml):
    """(value, label, colour) of each entry of a QML's paletted renderer."""
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    assert renderer.get("band") == "1"
    return [
        (int(e.get("value")), e.get("label"), e.get("color"), e.get("alpha"))
        for e in renderer.iter("paletteEntry")
    ]


def test_uint8_probabilities_read_as_probabilities(tmp_path):
    paths, p = predicted(tmp_path, "uint8")
    with rasterio.open(paths.probabilities) as src:
        assert src.count == 3 and src.dtypes[0] == "uint8"
        assert src.descriptions == ("p_bare & rock", 'p_roof "flat" <new>', "confidence")
        assert src.scales == (1 / 255,) * 3 and src.offsets == (0.0,) * 3
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"  # horizontal differencing
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.colorinterp == (ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined)
        scaled = src.read(masked=True).astype(np.float64) * src.scales[0] + src.offsets[0]
    assert photometric(paths.probabilities) == MINISBLACK  # 3 uint8 bands, yet not RGB
    valid = ~scaled.mask[0]
    assert not valid[:4].any() and valid[4:].all()
    np.testing.assert_allclose(scaled[:2, valid], p[:, valid], atol=0.5 / 255)
    np.testing.assert_allclose(scaled[2, valid], p.max(axis=0)[valid], atol=0.5 / 255)


def test_float32_probabilities_use_the_floating_point_predictor(tmp_path):
    paths, p = predicted(tmp_path, "float32", shape=(24, 600))  # wider than one COG tile
    with rasterio.open(paths.probabilities) as src:
        assert src.tags(ns="IMAGE_STRUCTURE") == {
            "LAYOUT": "COG",
            "COMPRESSION": "DEFLATE",
            "INTERLEAVE": "PIXEL",
            "PREDICTOR": "3",
        }
        assert src.scales == (1.0,) * 3 and src.offsets == (0.0,) * 3
        assert src.overviews(1) == [2] and src.block_shapes == [(512, 512)] * 3
        np.testing.assert_array_equal(src.read(1)[4:], p[0, 4:])
        overview = src.read(1, out_shape=(12, 300), masked=True)
    assert overview.mask[:2].all() and not overview.mask[2:].any()  # the mask's overview
    expected = p[0, 4:].reshape(10, 2, 300, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(overview[2:], expected, rtol=1e-6)
    assert photometric(paths.probabilities) == MINISBLACK


def test_class_map_style_lists_exactly_the_model_classes(tmp_path):
    paths, _ = predicted(tmp_path, "uint8")
    assert paths.finals() == [
        tmp_path / "scene_classes.tif",
        tmp_path / "scene_probabilities.tif",
        tmp_path / "scene_classes.qml",  # the name QGIS loads as the default style
        tmp_path / "scene_probabilities.qml",
        tmp_path / "scene_classes.tif.aux.xml",  # GDAL's category names and attribute table
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.finals())
    qml = paths.styles()[0].read_text()
    assert qml.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
    assert palette(qml) == [
        (0, "bare & rock", "#010203", "255"),
        (2, 'roof "flat" <new>', "#dc2828", "255"),
    ]
    with rasterio.open(paths.classes) as src:  # the classes are in the COG's metadata too
        assert CLASSES_TAG in src.tags() and src.colormap(1)[2] == (220, 40, 40, 255)


def test_probability_style_shows_confidence_from_0_to_1_with_the_mask_as_alpha(tmp_path):
    paths, _ = predicted(tmp_path, "uint8")
    root = ET.fromstring(paths.styles()[1].read_text().split("\n", 1)[1])
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    assert (renderer.get("type"), renderer.get("band"), renderer.get("alphaBand")) == (
        "singlebandpseudocolor",
        "3",  # the confidence band
        "4",  # the mask band QGIS adds after the last band
    )
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0", "1")
    values = [float(item.get("value")) for item in shader.iter("item")]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)


def test_a_missing_style_makes_the_outputs_not_current(tmp_path):
    paths, _ = predicted(tmp_path, "uint8")
    assert is_current(paths, TAGS)
    paths.styles()[1].unlink()  # interrupted after the last COG
    assert not is_current(paths, TAGS)


def test_class_map_has_gdal_category_names_and_an_attribute_table(tmp_path):
    """``<name>.tif.aux.xml`` beside the class COG: GDAL reads category names and a
    thematic attribute table (value, class, colour) with the raster."""
    import json
    import shutil
    import subprocess

    from terraseg.pipeline.prediction.styles import class_map_pam, pam_path

    table = class_table([(2, "water", (30, 100, 220)), (5, "road & rail", (90, 90, 90))])
    root = ET.fromstring(class_map_pam(table))
    categories = [c.text or "" for c in root.iter("Category")]
    assert categories == ["", "", "water", "", "", "road & rail"]
    rows = [[f.text for f in row.iter("F")] for row in root.iter("Row")]
    assert rows == [["2", "water", "30", "100", "220"], ["5", "road & rail", "90", "90", "90"]]
    if shutil.which("gdalinfo") is None:
        return  # the file's content is checked above; GDAL's reading where it is installed
    raster = tmp_path / "m_classes.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(np.full((1, 8, 8), 5, np.uint8))
    pam_path(raster).write_text(class_map_pam(table))
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(raster)], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    assert info["bands"][0]["categories"] == categories
    assert [r["f"] for r in info["rat"]["row"]] == [[2, "water", 30, 100, 220],
                                                    [5, "road & rail", 90, 90, 90]]  # fmt: skip
