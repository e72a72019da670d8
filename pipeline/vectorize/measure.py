"""True areas (m²) and perimeters (m) of polygons, whatever the raster's CRS.

Polygons are measured in a Lambert azimuthal equal-area projection centred on their
raster, on the ellipsoid of the raster's own geodetic CRS (no datum shift): areas
there are the areas on the ellipsoid, and lengths are within 0.01 % of the ground's
up to 180 km from the centre (0.1 % up to 570 km). Edges longer than :data:`DENSIFY_M` are split
first, so that an edge straight in the raster's CRS stays the same line on the ground.
A CRS's own planar units would be off by its scale factor: in EPSG:3857 at 51° N
areas come out 2.5 times too large and lengths 1.6 times too long.

The projection was chosen over geodesic measures on the ellipsoid
(``pyproj.Geod.polygon_area_perimeter`` per ring) because it is one vectorized
transform: on 3 000 polygons of a 1.5 km raster in EPSG:3857 it took 12 µs a
polygon against 20 µs, and the two agreed within 2e-8 in area and 2e-7 in length.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import shapely

from terraseg.pipeline.errors import CRSError
from terraseg.pipeline.vectorize.pieces import FloatArray, GeomArray

if TYPE_CHECKING:
    from pyproj import Transformer

    from terraseg.pipeline.vectorize.rasters import RasterInfo

DENSIFY_M = 1000.0  # longest edge measured as a straight line in the equal-area plane


def equal_area_crs(
    crs_wkt: str, bounds: tuple[float, float, float, float], path: str | None = None
) -> str:
    """WKT of the Lambert azimuthal equal-area CRS centred on ``bounds``, on the CRS's datum.

    Args:
        crs_wkt: The raster's CRS.
        bounds: ``(left, bottom, right, top)`` of the raster in that CRS.
        path: The raster, named by the error.

    Returns:
        The equal-area CRS's WKT.

    Raises:
        CRSError: The CRS has no geodetic CRS (an engineering CRS), so it has no ground
            to measure on.
    """
    from pyproj import CRS, Transformer
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    crs = CRS.from_wkt(crs_wkt)
    geodetic = crs.geodetic_crs
    if geodetic is None:
        raise CRSError(f"CRS {crs.name!r} has no ellipsoid to measure areas on", path=path)
    to_geodetic = Transformer.from_crs(crs, geodetic, always_xy=True)
    lon, lat = to_geodetic.transform((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    conversion = LambertAzimuthalEqualAreaConversion(latitude_natural_origin=lat,
                                                     longitude_natural_origin=lon)  # fmt: skip
    return str(ProjectedCRS(conversion, geodetic_crs=geodetic).to_wkt())


@functools.lru_cache(maxsize=8)
def _to_plane(crs_wkt: str, plane_wkt: str) -> Transformer:
    """The transformer into the equal-area plane (made once per process: about 50 ms)."""
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_wkt(plane_wkt), always_xy=True)


def _plane_geoms(pixel_geoms: GeomArray, info: RasterInfo) -> GeomArray:
    """Pixel-coordinate geometries in the equal-area plane, long edges split first.

    Only geometries whose bounding box is longer than ``info.densify_px`` on a side
    can have such an edge, so only those are split. Pixel to CRS (the geotransform)
    and CRS to plane are applied in one pass over the coordinates.
    """
    geoms = np.asarray(pixel_geoms, dtype=object)
    if len(geoms):
        x0, y0, x1, y1 = shapely.bounds(geoms).T
        long = np.maximum(x1 - x0, y1 - y0) > info.densify_px
        if long.any():
            geoms = geoms.copy()
            geoms[long] = shapely.segmentize(geoms[long], info.densify_px)
    transformer = _to_plane(info.crs_wkt, info.area_crs)
    a, b, c, d, e, f = info.transform[:6]

    def apply(xy: FloatArray) -> FloatArray:
        col, row = xy[:, 0], xy[:, 1]
        x, y = transformer.transform(c + col * a + row * b, f + col * d + row * e)
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def area_perimeter(pixel_geoms: GeomArray, info: RasterInfo) -> tuple[FloatArray, FloatArray]:
    """Area in m² and perimeter in m (every ring, holes included) of each polygon.

    Args:
        pixel_geoms: Polygons in the pixel coordinates of ``info``'s raster.
        info: The raster.

    Returns:
        The areas and the perimeters, as float64 arrays.
    """
    plane = _plane_geoms(pixel_geoms, info)
    return (
        np.asarray(shapely.area(plane), np.float64),
        np.asarray(shapely.length(plane), np.float64),
    )


def area_m2(pixel_geoms: GeomArray, info: RasterInfo) -> FloatArray:
    """Area in m² of each polygon given in the pixel coordinates of ``info``'s raster."""
    return np.asarray(shapely.area(_plane_geoms(pixel_geoms, info)), np.float64)


def at_least(pixel_geoms: GeomArray, min_area_m2: float, info: RasterInfo) -> npt.NDArray[np.bool_]:
    """Whether each polygon's area is ``min_area_m2`` or more (all of them when it is 0)."""
    if min_area_m2 <= 0:
        return np.ones(len(pixel_geoms), dtype=bool)
    return area_m2(pixel_geoms, info) >= min_area_m2
