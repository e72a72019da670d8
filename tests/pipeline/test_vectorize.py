from __future__ import annotations

import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio.features
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terraseg.pipeline.classes import CLASSES_TAG, class_table
from terraseg.pipeline.errors import (
    ConfigError,
    CRSError,
    IncompleteOutputError,
    InputError,
    LockedError,
    OutputExistsError,
)
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.locks import lock_path, output_lock
from terraseg.pipeline.vectorize.blocks import block_plan, polygonize_block
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.driver import block_results, check_output, vectorize_rasters
from terraseg.pipeline.vectorize.features import (
    SCRATCH_SUFFIX,
    finalize,
    load_features,
    save_features,
)
from terraseg.pipeline.vectorize.geometry import remove_collinear
from terraseg.pipeline.vectorize.gpkg import polygon_layers
from terraseg.pipeline.vectorize.merge import EdgeMerger
from terraseg.pipeline.vectorize.rasters import read_raster_info
from tests.vectorize_data import TRANSFORM, blobs, rings, write_classmap

PIXEL_AREA = 0.25  # 0.5 m pixels


def config(**values: object) -> VectorizeConfig:
    return VectorizeConfig.model_validate(values)


def run(path: Path, out: Path, **values: object) -> Path:
    vectorize_rasters(
        [read_raster_info(path)], out, config(**values), InProcessExecutor(), overwrite=True
    )
    return out


def features(out: Path, layer: str = "polygons") -> list[tuple[int, bytes]]:
    """(class id, normalized WKB) of every polygon, sorted."""
    table = pyogrio.read_dataframe(out, layer=layer)
    geoms = shapely.normalize(np.asarray(table.geometry.values))
    return sorted(zip(table.class_id.astype(int), shapely.to_wkb(geoms), strict=True))


def whole_array(data: np.ndarray, mask: np.ndarray | None = None) -> list[tuple[int, bytes]]:
    """One pass of rasterio.features.shapes over the whole array (the reference)."""
    shapes = rasterio.features.shapes(data, mask=mask, transform=TRANSFORM)
    result = [(int(v), shapely.normalize(shapely.geometry.shape(g))) for g, v in shapes]
    return sorted((v, shapely.to_wkb(g)) for v, g in result)


# --------------------------------------------------------------------------- exactness


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(16, 70),
    cols=st.integers(16, 70),
    block=st.integers(16, 40),
    classes=st.integers(1, 4),
    kind=st.sampled_from(["noise", "blobs", "rings"]),
    seed=st.integers(0, 1000),
)
def test_blockwise_equals_whole_array(
    tmp_path: Path, rows: int, cols: int, block: int, classes: int, kind: str, seed: int
) -> None:
    match kind:
        case "noise":
            data = np.random.default_rng(seed).integers(0, classes, (rows, cols)).astype(np.uint8)
        case "blobs":
            data = blobs((rows, cols), classes, seed, scale=2.0)
        case "rings":
            data = rings((rows, cols))
        case _:
            raise AssertionError(kind)
    raster = write_classmap(tmp_path / f"{kind}-{seed}.tif", data)
    out = run(raster, tmp_path / f"{kind}-{seed}-{block}.gpkg", block_size=block)
    assert features(out) == whole_array(data)


@pytest.mark.parametrize("block", [16, 21, 64])
def test_polygons_spanning_many_blocks_with_holes_and_nodata(tmp_path: Path, block: int) -> None:
    data = rings((150, 130))
    data[40:47, 10:100] = 255  # ignore label: a nodata strip cutting through rings
    data[100:140, 100:104] = 9
    raster = write_classmap(tmp_path / "rings.tif", data, nodata=255)
    out = run(raster, tmp_path / "rings.gpkg", block_size=block)
    got = features(out)
    assert got == whole_array(data, data != 255)
    with_holes = [w for _, w in got if shapely.get_num_interior_rings(shapely.from_wkb(w)) > 0]
    assert with_holes  # the rings make polygons with holes that span many blocks


def test_corner_touching_pieces_stay_apart(tmp_path: Path) -> None:
    data = np.zeros((32, 32), np.uint8)
    data[8:16, 8:16] = 1  # meets the next square only at the block corner (16, 16)
    data[16:24, 16:24] = 1
    out = run(write_classmap(tmp_path / "c.tif", data), tmp_path / "c.gpkg", block_size=16)
    assert features(out) == whole_array(data)
    assert sum(1 for c, _ in features(out) if c == 1) == 2


def test_area_per_class_adds_up_and_geometries_valid(tmp_path: Path) -> None:
    data = blobs((120, 90), 5, seed=7)
    out = run(write_classmap(tmp_path / "b.tif", data), tmp_path / "b.gpkg", block_size=32)
    table = pyogrio.read_dataframe(out, layer="polygons")
    assert shapely.is_valid(np.asarray(table.geometry.values)).all()
    for class_id, pixels in zip(*np.unique(data, return_counts=True), strict=True):
        rows = table[table.class_id == class_id]
        union = shapely.union_all(np.asarray(rows.geometry.values))
        assert union.area == pytest.approx(pixels * PIXEL_AREA, rel=1e-12)  # exact in the CRS
        # on the central meridian of UTM 33N a 0.25 m² pixel covers 0.25 / 0.9996² m² of ground
        assert rows.area_m2.sum() == pytest.approx(pixels * PIXEL_AREA / 0.9996**2, rel=1e-6)


def test_remove_collinear_keeps_corners() -> None:
    square = shapely.Polygon([(0, 0), (0, 1), (0, 2), (2, 2), (2, 0), (1, 0)])
    (result,) = remove_collinear(np.array([square], object))
    assert len(shapely.get_coordinates(result)) == 5 and result.equals(square)


# --------------------------------------------------------------------------- post-processing


@pytest.mark.parametrize(
    "values",
    [{"fill_holes": 3.0}, {"min_area": 2.0}, {"fill_holes": 5.0, "min_area": 1.0}],
    ids=["fill", "min-area", "both"],
)
def test_post_processing_does_not_depend_on_blocks(tmp_path: Path, values: dict) -> None:
    data = blobs((90, 100), 4, seed=3, scale=1.5)
    raster = write_classmap(tmp_path / "b.tif", data)
    one_pass = features(run(raster, tmp_path / "one.gpkg", block_size=4096, **values))
    for block in (16, 27):
        assert (
            features(run(raster, tmp_path / f"{block}.gpkg", block_size=block, **values))
            == one_pass
        )
    geoms = shapely.from_wkb([w for _, w in one_pass])
    if "min_area" in values:
        assert (shapely.area(geoms) >= values["min_area"]).all()
    if "fill_holes" in values:
        assert len(geoms) < len(whole_array(data))  # filled holes absorbed polygons
        _assert_no_overlaps(geoms)


@pytest.mark.parametrize("block", [16, 21, 27])
def test_filled_holes_spanning_rows_of_blocks_match_one_pass(tmp_path: Path, block: int) -> None:
    # Nested square rings around the centre: filled holes span several rows of blocks,
    # and polygons inside them close rows before the polygon that encloses them.
    raster = write_classmap(tmp_path / "r.tif", rings((160, 140)))
    values = {"fill_holes": 140.0, "min_area": 1.0}  # fills holes up to 23 x 23 px
    one_pass = features(run(raster, tmp_path / "one.gpkg", block_size=4096, **values))
    assert len(one_pass) < len(features(run(raster, tmp_path / "raw.gpkg", block_size=4096)))
    assert features(run(raster, tmp_path / "b.gpkg", block_size=block, **values)) == one_pass


def test_edge_merger_carries_only_groups_that_later_blocks_can_reach(tmp_path: Path) -> None:
    data = rings((100, 90))
    info = read_raster_info(write_classmap(tmp_path / "r.tif", data))
    cfg = config(block_size=16)
    merger = EdgeMerger(info.shape, cfg.block_size)
    closed = finals = 0
    for window in block_plan(info, cfg):
        result = polygonize_block(info, window, cfg, str(tmp_path))
        closed += len(merger.add_block(result.edges, window))
        finals += result.final_count
        x0, y0, x1, y1 = shapely.bounds(merger.carry.geoms).T
        # On the bottom line of this row of blocks, or of the previous row right of
        # this block, or on this block's right side.
        frontier = (y1 == window.row_end) | ((y1 == window.row_off) & (x0 >= window.col_end))
        frontier |= (x1 == window.col_end) & (y0 >= window.row_off)
        for root in np.unique(merger.roots):
            assert frontier[merger.roots == root].any()
    assert len(merger.carry) == 0
    assert closed + finals == len(whole_array(data))


def _assert_no_overlaps(geoms: np.ndarray) -> None:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    assert np.all(overlap < 1e-9)


@pytest.mark.parametrize("block", [16, 40])
def test_coverage_simplification_opens_no_gaps_or_overlaps(tmp_path: Path, block: int) -> None:
    data = blobs((96, 80), 4, seed=11, scale=3.0)
    raster = write_classmap(tmp_path / "b.tif", data)
    tolerance = 1.0  # metres: two pixels
    out = run(raster, tmp_path / "s.gpkg", block_size=block, simplify=tolerance)
    table = pyogrio.read_dataframe(out, layer="polygons")
    geoms = np.asarray(table.geometry.values)
    assert shapely.is_valid(geoms).all()
    _assert_no_overlaps(geoms)
    extent = 96 * 80 * PIXEL_AREA
    assert shapely.union_all(geoms).area == pytest.approx(extent, rel=1e-9)  # no gaps
    exact = pyogrio.read_dataframe(
        run(raster, tmp_path / "e.gpkg", block_size=block), layer="polygons"
    )
    for class_id in np.unique(data):
        before = exact[exact.class_id == class_id]
        after = table[table.class_id == class_id].geometry.area.sum()
        # Stated tolerance: the area of a class moves by less than tolerance x its boundary.
        assert abs(after - before.area_m2.sum()) < tolerance * before.perimeter_m.sum()
    assert len(shapely.get_coordinates(geoms)) < len(shapely.get_coordinates(exact.geometry.values))


def test_drop_background_and_confidence(tmp_path: Path) -> None:
    data = rings((64, 64))
    raster = write_classmap(tmp_path / "r.tif", data)
    probs = (0.5 + 0.1 * data).astype(np.float32)
    prob_path = write_classmap(tmp_path / "p.tif", probs)
    info = read_raster_info(raster, confidence=prob_path)
    out = tmp_path / "c.gpkg"
    vectorize_rasters([info], out, config(block_size=16, drop_background=True), InProcessExecutor())
    table = pyogrio.read_dataframe(out, layer="polygons")
    assert 0 not in set(table.class_id)
    assert np.allclose(table.confidence, 0.5 + 0.1 * table.class_id)


# --------------------------------------------------------------------------- scratch files


class _Planted:
    """Pickling this object plants a file when the pickle is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_scratch_files_are_plain_arrow_and_round_trip(tmp_path: Path) -> None:
    import pickle

    import pyarrow as pa

    data = blobs((40, 40), 3, seed=4)
    info = read_raster_info(write_classmap(tmp_path / "b.tif", data))
    cfg = config(block_size=16)
    result = polygonize_block(info, block_plan(info, cfg)[0], cfg, str(tmp_path))
    assert result.final_file is not None and result.final_file.endswith(SCRATCH_SUFFIX)
    with pa.OSFile(result.final_file, "rb") as source:  # an ordinary Arrow IPC file
        schema = pa.ipc.open_file(source).schema
    assert schema.field("wkb").type == pa.binary()
    assert len(load_features(result.final_file)["wkb"]) == result.final_count
    features = finalize(result.edges, info, simplified=False)
    path = tmp_path / f"edges{SCRATCH_SUFFIX}"
    save_features(path, features)
    back = load_features(path)
    assert back.keys() == features.keys()
    for key in features:
        np.testing.assert_array_equal(back[key], features[key])
    planted = tmp_path / "pickle.bin"
    planted.write_bytes(pickle.dumps({"wkb": _Planted(tmp_path / "ran")}))
    with pytest.raises(InputError, match="not a vectorize scratch file"):
        load_features(planted)
    assert not (tmp_path / "ran").exists()


def _probability_raster(path: Path, data: np.ndarray, dtype: str, named: bool) -> np.ndarray:
    """A probability raster laid out as predict writes it: p_<class> bands, then confidence.

    Returns the confidence band as 0-1 floats, NaN where the mask hides it.
    """
    import rasterio

    rng = np.random.default_rng(3)
    classes = int(data.max()) + 1
    probs = rng.dirichlet(np.ones(classes), size=data.shape).transpose(2, 0, 1)
    bands = np.concatenate([probs, rng.random((1, *data.shape))]).astype(np.float32)
    if dtype == "uint8":
        bands = np.rint(bands * 255).astype(np.uint8)
    valid = np.ones(data.shape, bool)
    valid[5:12, 20:50] = False  # masked pixels inside polygons do not count
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1],
               "count": len(bands), "dtype": dtype, "crs": "EPSG:32633",
               "transform": TRANSFORM}  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        dst.write_mask(valid.astype(np.uint8) * 255)
        if named:
            dst.descriptions = (*(f"p_class_{i}" for i in range(classes)), "confidence")
    scale = 255.0 if dtype == "uint8" else 1.0
    return np.where(valid, bands[-1].astype(np.float64) / scale, np.nan)


@pytest.mark.parametrize(("dtype", "named"), [("uint8", True), ("float32", False)])
def test_confidence_is_the_mean_of_the_confidence_band(
    tmp_path: Path, dtype: str, named: bool
) -> None:
    data = blobs((60, 70), 3, seed=9)
    raster = write_classmap(tmp_path / "m.tif", data)
    conf = _probability_raster(tmp_path / "p.tif", data, dtype, named)
    info = read_raster_info(raster, confidence=tmp_path / "p.tif")
    out = tmp_path / "c.gpkg"
    vectorize_rasters([info], out, config(block_size=16), InProcessExecutor())
    table = pyogrio.read_dataframe(out, layer="polygons")
    for geom, got in zip(table.geometry.values, table.confidence, strict=True):
        inside = rasterio.features.rasterize([geom], data.shape, transform=TRANSFORM) == 1
        values = conf[inside & ~np.isnan(conf)]
        if len(values):
            assert got == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
        else:
            assert np.isnan(got)


# --------------------------------------------------------------------------- GeoPackage


def test_geopackage_has_crs_index_schema_and_style(tmp_path: Path) -> None:
    table = class_table([(0, "background", (1, 2, 3)), (1, "building", (220, 40, 40)),
                         (2, "road", (90, 90, 90)), (3, "water", (0, 0, 255))])  # fmt: skip
    raster = write_classmap(tmp_path / "r.tif", rings((40, 40)) % 3)
    out = tmp_path / "r.gpkg"
    vectorize_rasters(
        [read_raster_info(raster, table)], out, config(block_size=16), InProcessExecutor()
    )
    info = pyogrio.read_info(out, layer="polygons")
    assert info["crs"] == "EPSG:32633"
    assert info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2", "perimeter_m", "source"]
    assert polygon_layers(out) == ["polygons"]
    with sqlite3.connect(out) as db:
        assert db.execute("SELECT count(*) FROM rtree_polygons_geom").fetchone()[0] > 0
        name, qml, default = db.execute(
            "SELECT f_table_name, styleQML, useAsDefault FROM layer_styles"
        ).fetchone()
    assert (name, default) == ("polygons", 1)
    assert 'type="categorizedSymbol"' in qml and 'label="building"' in qml
    assert "220,40,40,255" in qml
    names = pyogrio.read_dataframe(out, layer="polygons").set_index("class_id").class_name
    assert names[1].iloc[0] == "building" and set(names.index) == {0, 1, 2}


# The table as QGIS 3.22 creates it through GDAL 3.6 (saveStyleToDatabase on a GeoPackage):
# PRAGMA table_info rows (cid, name, type, notnull, default, pk).
QGIS_LAYER_STYLES = [
    (0, "id", "INTEGER", 1, None, 1),
    (1, "f_table_catalog", "TEXT(256)", 0, None, 0),
    (2, "f_table_schema", "TEXT(256)", 0, None, 0),
    (3, "f_table_name", "TEXT(256)", 0, None, 0),
    (4, "f_geometry_column", "TEXT(256)", 0, None, 0),
    (5, "styleName", "TEXT(30)", 0, None, 0),
    (6, "styleQML", "TEXT", 0, None, 0),
    (7, "styleSLD", "TEXT", 0, None, 0),
    (8, "useAsDefault", "BOOLEAN", 0, None, 0),
    (9, "description", "TEXT", 0, None, 0),
    (10, "owner", "TEXT(30)", 0, None, 0),
    (11, "ui", "TEXT(30)", 0, None, 0),
    (12, "update_time", "DATETIME", 0, "strftime('%Y-%m-%dT%H:%M:%fZ','now')", 0),
]


def test_geopackage_is_version_1_2_with_layer_styles_as_qgis_makes_them(tmp_path: Path) -> None:
    table = class_table([(0, "bare & rock", (1, 2, 3)), (1, "roof <flat>", (220, 40, 40))])
    raster = write_classmap(tmp_path / "r.tif", rings((32, 32)) % 2)
    out = tmp_path / "r.gpkg"
    vectorize_rasters(
        [read_raster_info(raster, table)],
        out,
        config(block_size=16, layer_per_class=True),
        InProcessExecutor(),
    )
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA application_id").fetchone() == (0x47504B47,)  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone() == (10200,)  # 1.2.0
        assert db.execute("PRAGMA table_info(layer_styles)").fetchall() == QGIS_LAYER_STYLES
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, owner, ui, "
            "update_time, styleSLD FROM layer_styles ORDER BY id"
        ).fetchall()
        contents = db.execute(
            "SELECT data_type, identifier, srs_id FROM gpkg_contents "
            "WHERE table_name = 'layer_styles'"
        ).fetchone()
        count = db.execute(
            "SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert contents == ("attributes", "layer_styles", 0) and count == (2,)
    assert [row[:6] for row in rows] == [
        ("bare & rock", "geom", "bare & rock", 1, "", None),
        ("roof <flat>", "geom", "roof <flat>", 1, "", None),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r[6]) for r in rows)
    assert sld_rules(rows[0][7]) == [
        ("bare & rock", "class_id", "0", "#010203"),
        ("roof <flat>", "class_id", "1", "#dc2828"),
    ]
    assert polygon_layers(out) == ["bare & rock", "roof <flat>"]


def sld_rules(sld: str) -> list[tuple[str, str, str, str]]:
    """(title, filtered attribute, value, fill) of each rule of an SLD 1.1 document."""
    ns = {"sld": "http://www.opengis.net/sld", "se": "http://www.opengis.net/se",
          "ogc": "http://www.opengis.net/ogc"}  # fmt: skip
    root = ET.fromstring(sld.encode())
    assert root.tag == "{http://www.opengis.net/sld}StyledLayerDescriptor"
    assert root.get("version") == "1.1.0"
    rules = root.findall("sld:NamedLayer/sld:UserStyle/se:FeatureTypeStyle/se:Rule", ns)
    return [
        (
            rule.findtext("se:Description/se:Title", namespaces=ns) or "",
            rule.findtext("ogc:Filter/ogc:PropertyIsEqualTo/ogc:PropertyName", namespaces=ns) or "",
            rule.findtext("ogc:Filter/ogc:PropertyIsEqualTo/ogc:Literal", namespaces=ns) or "",
            rule.findtext(
                "se:PolygonSymbolizer/se:Fill/se:SvgParameter[@name='fill']", namespaces=ns
            )
            or "",
        )
        for rule in rules
    ]


def test_empty_mask_gives_empty_layer_with_schema(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "e.tif", np.full((20, 20), 255, np.uint8), nodata=255)
    out = run(raster, tmp_path / "e.gpkg", block_size=16)
    info = pyogrio.read_info(out, layer="polygons")
    assert info["features"] == 0 and "class_name" in list(info["fields"])


def test_layer_per_class_and_several_rasters(tmp_path: Path) -> None:
    first = write_classmap(tmp_path / "a.tif", rings((32, 32)))
    second = write_classmap(tmp_path / "b.tif", blobs((32, 32), 3, seed=1))
    out = tmp_path / "m.gpkg"
    infos = [read_raster_info(first), read_raster_info(second)]
    vectorize_rasters(infos, out, config(block_size=16, layer_per_class=True), InProcessExecutor())
    assert polygon_layers(out) == ["class_0", "class_1", "class_2", "class_3", "class_4"]
    sources = set(pyogrio.read_dataframe(out, layer="class_1").source)
    assert sources == {"a.tif", "b.tif"}


def test_several_rasters_on_the_same_block_grid_keep_their_own_polygons(tmp_path: Path) -> None:
    first = write_classmap(tmp_path / "a.tif", blobs((40, 40), 3, seed=1))
    second = write_classmap(tmp_path / "b.tif", blobs((40, 40), 3, seed=2))
    for values in ({}, {"layer_per_class": True}):
        out = tmp_path / "m.gpkg"
        infos = [read_raster_info(first), read_raster_info(second)]
        vectorize_rasters(
            infos, out, config(block_size=16, **values), InProcessExecutor(), overwrite=True
        )
        for raster in (first, second):
            alone = run(raster, tmp_path / "alone.gpkg", block_size=16)
            got = []
            for layer in polygon_layers(out):
                table = pyogrio.read_dataframe(out, layer=layer)
                rows = table[table.source == raster.name]
                geoms = shapely.normalize(np.asarray(rows.geometry.values))
                got += zip(rows.class_id.astype(int), shapely.to_wkb(geoms), strict=True)
            assert sorted(got) == features(alone)


def test_class_names_from_raster_tag(tmp_path: Path) -> None:
    table = class_table([(0, "soil", (1, 1, 1)), (1, "tree", (0, 200, 0))])
    tag = json.dumps(table.to_dict())
    raster = write_classmap(
        tmp_path / "t.tif", (rings((20, 20)) % 2).astype(np.uint8), **{CLASSES_TAG: tag}
    )
    out = run(raster, tmp_path / "t.gpkg", block_size=16)
    assert set(pyogrio.read_dataframe(out, layer="polygons").class_name) == {"soil", "tree"}


def write_georaster(path: Path, data: np.ndarray, crs: str, lon: float, lat: float, pixel: float):
    """A class map in ``crs`` whose upper-left corner lies at ``(lon, lat)``."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    rows, cols = data.shape
    profile = {"driver": "GTiff", "height": rows, "width": cols, "count": 1, "dtype": "uint8",
               "crs": crs, "transform": from_origin(x, y, pixel, pixel)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def geodesic_reference(geoms: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Area and perimeter (every ring) on the CRS's ellipsoid, of geometries densified in it."""
    from pyproj import CRS, Geod, Transformer

    source = CRS.from_user_input(crs)
    geod = Geod(a=source.ellipsoid.semi_major_metre, rf=source.ellipsoid.inverse_flattening)
    to_lonlat = Transformer.from_crs(source, source.geodetic_crs, always_xy=True)
    step = 1e-6 if source.is_geographic else 0.1  # about 10 cm either way
    areas, perimeters = [], []
    for geom in geoms:
        dense = shapely.segmentize(geom, step)
        lonlat = shapely.transform(dense, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
        areas.append(abs(geod.geometry_area_perimeter(lonlat)[0]))
        rings = [lonlat.exterior, *lonlat.interiors]
        perimeters.append(sum(geod.line_length(*np.asarray(r.coords).T) for r in rings))
    return np.array(areas), np.array(perimeters)


@pytest.mark.parametrize(
    ("crs", "lon", "lat", "pixel"),
    [
        ("EPSG:3857", 7.0, 51.0, 1.0),  # planar areas here are 2.5 times the true ones
        ("EPSG:4326", 15.0, 48.0, 1e-5),
        ("EPSG:32632", 6.0, 51.0, 1.0),  # 3 degrees off the zone's central meridian
    ],
)
def test_area_and_perimeter_are_geodesic_in_any_crs(
    tmp_path: Path, crs: str, lon: float, lat: float, pixel: float
) -> None:
    data = rings((60, 80))  # squares with holes, over several blocks, and a checkerboard
    data[40:, 50:] = blobs((20, 30), 3, seed=2)
    out = run(write_georaster(tmp_path / "m.tif", data, crs, lon, lat, pixel), tmp_path / "m.gpkg",
              block_size=16)  # fmt: skip
    table = pyogrio.read_dataframe(out, layer="polygons")
    area, perimeter = geodesic_reference(np.asarray(table.geometry.values), crs)
    assert (shapely.get_num_interior_rings(np.asarray(table.geometry.values)) > 0).any()
    np.testing.assert_allclose(table.area_m2, area, rtol=1e-5)  # far inside 0.5 %
    np.testing.assert_allclose(table.perimeter_m, perimeter, rtol=1e-5)


def test_min_area_and_fill_holes_are_true_square_metres(tmp_path: Path) -> None:
    # 1 m pixels of EPSG:3857 at 51 N cover 0.396 m² of ground: a 10 x 10 px square is
    # 100 m² in the CRS but 39.6 m², a 4 x 4 px hole 16 m² but 6.3 m²
    data = np.zeros((40, 40), np.uint8)
    data[5:15, 5:15] = 1
    data[20:35, 20:35] = 2
    data[25:29, 25:29] = 0  # a hole in the class-2 square
    raster = write_georaster(tmp_path / "m.tif", data, "EPSG:3857", 7.0, 51.0, 1.0)
    table = pyogrio.read_dataframe(run(raster, tmp_path / "all.gpkg"), layer="polygons")
    square = table[table.class_id == 1].area_m2.iloc[0]
    assert square == pytest.approx(100 * np.cos(np.radians(51.0)) ** 2, rel=2e-3)
    kept = pyogrio.read_dataframe(run(raster, tmp_path / "k.gpkg", min_area=50.0), layer="polygons")
    assert 1 not in set(kept.class_id) and 2 in set(kept.class_id)  # 39.6 m² < 50 m²
    filled = pyogrio.read_dataframe(
        run(raster, tmp_path / "f.gpkg", fill_holes=10.0), layer="polygons"
    )
    ring = filled[filled.class_id == 2].geometry.iloc[0]
    assert shapely.get_num_interior_rings(ring) == 0  # the 6.3 m² hole was under 10 m²
    assert len(filled) == len(table) - 1  # what lay inside it is absorbed


# --------------------------------------------------------------------------- integrity


def test_a_raster_given_twice_is_vectorized_once(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "b.tif", blobs((40, 50), 3, seed=6))
    alone = features(run(raster, tmp_path / "alone.gpkg", block_size=16))
    again = tmp_path / "sub" / ".." / "b.tif"  # another spelling of the same file
    (tmp_path / "sub").mkdir()
    infos = [read_raster_info(raster), read_raster_info(again)]
    out = tmp_path / "twice.gpkg"
    summary = vectorize_rasters(infos, out, config(block_size=16), InProcessExecutor())
    assert features(out) == alone
    assert summary.polygons == len(alone)


def test_a_raster_given_twice_with_different_confidence_is_refused(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "r.tif", rings((20, 20)))
    first = write_classmap(tmp_path / "p1.tif", np.ones((20, 20), np.float32))
    second = write_classmap(tmp_path / "p2.tif", np.ones((20, 20), np.float32))
    infos = [read_raster_info(raster, confidence=p) for p in (first, second)]
    with pytest.raises(InputError, match="different confidence"):
        vectorize_rasters(infos, tmp_path / "o.gpkg", config(), InProcessExecutor())


def test_a_locked_output_is_refused_at_once(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "r.tif", rings((20, 20)))
    out = tmp_path / "out" / "r.gpkg"
    with output_lock(out):  # held by a live process: this one
        with pytest.raises(LockedError, match="another terraseg run"):
            check_output(out, overwrite=False)
        with pytest.raises(LockedError, match="another terraseg run"):
            vectorize_rasters([read_raster_info(raster)], out, config(), InProcessExecutor())
        assert [p.name for p in out.parent.iterdir()] == [lock_path(out).name]
    assert list(out.parent.iterdir()) == []


def test_a_block_without_result_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terraseg.pipeline.vectorize.driver as driver

    def losing_one(*args: object) -> Iterator[object]:
        results = list(block_results(*args))  # type: ignore[arg-type]
        yield from results[:5] + results[6:]  # block 5 reports nothing

    first = write_classmap(tmp_path / "a.tif", rings((40, 40)))
    second = write_classmap(tmp_path / "b.tif", rings((40, 40)))
    monkeypatch.setattr(driver, "block_results", losing_one)
    out = tmp_path / "out" / "r.gpkg"
    infos = [read_raster_info(first), read_raster_info(second)]
    with pytest.raises(IncompleteOutputError, match="1 of 9 blocks") as raised:
        vectorize_rasters(infos, out, config(block_size=16), InProcessExecutor())
    assert raised.value.path == str(first)
    assert "row 16, column 32" in str(raised.value)
    assert list(out.parent.iterdir()) == []


# --------------------------------------------------------------------------- errors


def test_float_raster_without_classes_is_refused(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "f.tif", np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="classes"):
        read_raster_info(raster)


def test_error_in_a_late_block_is_raised_as_itself_and_nothing_is_left(tmp_path: Path) -> None:
    data = np.zeros((64, 40), np.float32)
    data[60, 30] = 1.5  # not a class id, in the last row of blocks: the layer is half written
    raster = write_classmap(tmp_path / "f.tif", data)
    table = class_table([(0, "a", (0, 0, 0)), (1, "b", (1, 1, 1))])
    out = tmp_path / "out" / "f.gpkg"
    with pytest.raises(InputError, match="not class ids"):
        vectorize_rasters(
            [read_raster_info(raster, table)], out, config(block_size=16), InProcessExecutor()
        )
    assert list(out.parent.iterdir()) == []


def test_classes_missing_values_are_listed_and_nothing_is_left(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "r.tif", rings((40, 40)))  # values 0..4
    table = class_table([(0, "a", (0, 0, 0)), (1, "b", (1, 1, 1))])
    out = tmp_path / "out" / "r.gpkg"
    with pytest.raises(ConfigError, match="values 2, 3, 4 are not in the classes file"):
        vectorize_rasters(
            [read_raster_info(raster, table)], out, config(block_size=16), InProcessExecutor()
        )
    assert list(out.parent.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    raster = write_classmap(tmp_path / "r.tif", rings((20, 20)))
    out = tmp_path / "r.gpkg"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError):
        vectorize_rasters([read_raster_info(raster)], out, config(), InProcessExecutor())
    assert out.read_text() == "keep me"


def test_rasters_in_different_crs_are_refused(tmp_path: Path) -> None:
    import rasterio

    first = write_classmap(tmp_path / "a.tif", rings((20, 20)))
    second = write_classmap(tmp_path / "b.tif", rings((20, 20)))
    with rasterio.open(second, "r+") as dst:
        dst.crs = "EPSG:32632"
    with pytest.raises(CRSError, match="CRS differs"):
        vectorize_rasters(
            [read_raster_info(first), read_raster_info(second)],
            tmp_path / "x.gpkg",
            config(),
            InProcessExecutor(),
        )
