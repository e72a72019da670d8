"""Painting one block of a synthetic scene: the class map and 4-band imagery (R, G, B, NIR).

Each pixel's reflectance comes from its class and sub-kind (roof colour, tree or
grass, river or lake, road surface), textured with seamless noise, darkened in
cast shadows, lit with a slow illumination gradient, blurred by a sensor PSF and
overlaid with sensor noise. Everything is a function of global pixel
coordinates, so blocks tile a scene seamlessly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from rasterio.features import rasterize
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from terraseg.pipeline.grid import Window
from terraseg.pipeline.synth.layout import (
    BUILDING,
    CELL_M,
    ROAD,
    ROAD_KINDS,
    VEGETATION,
    WATER,
    CellContent,
    CellGenerator,
    SceneLayout,
    SceneSpec,
)
from terraseg.pipeline.synth.noise import fractal_noise, white_noise

F32 = NDArray[np.float32]

# Reflectance (R, G, B, NIR) of surfaces. Vegetation is bright in NIR, water dark.
SOIL = (0.40, 0.34, 0.27, 0.38)
SOIL_MOIST = (0.27, 0.24, 0.19, 0.30)  # darker, wetter or ploughed ground
GRASS = (0.19, 0.31, 0.13, 0.52)
TREE = (0.085, 0.16, 0.075, 0.44)
LAKE = (0.045, 0.08, 0.11, 0.02)
RIVER = (0.09, 0.115, 0.10, 0.03)
ROAD_SURFACES = {  # by ROAD_KINDS value
    ROAD_KINDS["main"]: (0.24, 0.24, 0.26, 0.21),
    ROAD_KINDS["street"]: (0.31, 0.31, 0.32, 0.26),
    ROAD_KINDS["track"]: (0.44, 0.39, 0.32, 0.37),
}
ROOF_REFLECTANCE = np.array(
    [
        (0.48, 0.21, 0.15, 0.31),  # red tile
        (0.41, 0.41, 0.43, 0.37),  # concrete grey
        (0.24, 0.24, 0.26, 0.21),  # bitumen: the colour of road asphalt
        (0.72, 0.72, 0.71, 0.66),  # white membrane
        (0.35, 0.26, 0.19, 0.29),  # brown
        (0.21, 0.34, 0.27, 0.27),  # green metal
        (0.19, 0.21, 0.25, 0.19),  # slate
    ],
    dtype=np.float32,
)
SHADOW_FACTOR = np.array([0.40, 0.42, 0.46, 0.55], dtype=np.float32)
HAZE = np.array([0.012, 0.016, 0.028, 0.004], dtype=np.float32)  # path radiance
PSF_SIGMA = 0.6  # sensor blur, pixels
PSF_RADIUS = 2
SENSOR_NOISE = 0.005  # reflectance units
DN_SCALE = {"uint8": 255.0 / 0.8, "uint16": 10000.0}
DN_MAX = {"uint8": 255, "uint16": 65535}
NODATA = 0


@dataclass
class PaintedBlock:
    """One painted block: imagery (bands, rows, cols), class map, and nodata mask."""

    image: NDArray[np.integer]
    classes: NDArray[np.uint8]
    nodata: NDArray[np.bool_]


class ScenePainter:
    """Paints blocks of one scene, caching cell contents between neighbouring blocks."""

    def __init__(self, spec: SceneSpec, cache_cells: int = 256) -> None:
        self.spec = spec
        self.layout = SceneLayout(spec)
        self.cells = CellGenerator(self.layout)
        self._cache: OrderedDict[tuple[int, int], CellContent] = OrderedDict()
        self._cache_size = cache_cells

    def content(self, ci: int, cj: int) -> CellContent:
        """Cell content, from the LRU cache when possible."""
        key = (ci, cj)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self.cells.content(ci, cj)
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def contents_near(self, region: Window, margin_m: float) -> list[CellContent]:
        """Contents of the cells within ``margin_m`` of a pixel region."""
        res = self.spec.resolution
        rows, cols = self.spec.cells
        i0 = max(0, math.floor((region.row_off * res - margin_m) / CELL_M))
        i1 = min(rows - 1, math.floor((region.row_end * res + margin_m) / CELL_M))
        j0 = max(0, math.floor((region.col_off * res - margin_m) / CELL_M))
        j1 = min(cols - 1, math.floor((region.col_end * res + margin_m) / CELL_M))
        return [self.content(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    def class_map(self, window: Window) -> NDArray[np.uint8]:
        """The label class of every pixel of ``window`` (0 = background)."""
        contents = self.contents_near(window, 0.0)
        shapes = [(g, c) for content in contents for g, c in content.labels]
        return _burn(shapes, window, self.spec.resolution, np.uint8).astype(np.uint8, copy=False)

    def paint(self, window: Window, dtype: str) -> PaintedBlock:
        """Paint ``window``: class map, digital numbers of 4 bands, nodata mask."""
        res = self.spec.resolution
        region = Window(
            window.row_off - PSF_RADIUS,
            window.col_off - PSF_RADIUS,
            window.height + 2 * PSF_RADIUS,
            window.width + 2 * PSF_RADIUS,
        )
        contents = self.contents_near(region, 40.0)
        classes = _burn([(g, c) for ct in contents for g, c in ct.labels], region, res, np.uint8)
        reflectance = self._surfaces(region, classes, contents)
        shadow = _burn([(g, 1) for ct in contents for g in ct.shadows], region, res, np.uint8) > 0
        reflectance[:, shadow] *= SHADOW_FACTOR[:, None]
        reflectance *= self._illumination(region)[None]
        reflectance += HAZE[:, None, None]
        reflectance = _blur(reflectance)
        inner = (slice(None), slice(PSF_RADIUS, -PSF_RADIUS), slice(PSF_RADIUS, -PSF_RADIUS))
        reflectance = reflectance[inner]
        for band in range(4):
            reflectance[band] += SENSOR_NOISE * white_noise(
                self.seed(50 + band), window.row_off, window.col_off, window.shape
            )
        image = np.clip(np.rint(reflectance * DN_SCALE[dtype]), 1, DN_MAX[dtype]).astype(dtype)
        nodata = _burn([(self.layout.nodata_area, 1)], window, res, np.uint8) > 0
        image[:, nodata] = NODATA
        return PaintedBlock(image=image, classes=classes[inner[1:]], nodata=nodata)

    def seed(self, purpose: int) -> int:
        """A noise seed for one purpose of this scene."""
        return (self.spec.seed * 1_000_003 + self.spec.index * 101 + purpose) & 0x7FFFFFFF

    def _noise(self, purpose: int, region: Window, wavelength_m: float, octaves: int = 3) -> F32:
        wavelength = wavelength_m / self.spec.resolution
        return fractal_noise(
            self.seed(purpose), region.row_off, region.col_off, region.shape, wavelength, octaves
        )

    def _surfaces(
        self, region: Window, classes: NDArray[np.uint8], contents: list[CellContent]
    ) -> F32:
        res = self.spec.resolution
        out = np.empty((4, *region.shape), dtype=np.float32)
        soil = 1 + 0.15 * self._noise(1, region, 90.0) + 0.07 * self._noise(2, region, 5.0, 2)
        mix = np.clip(0.5 + 1.5 * self._noise(11, region, 400.0, 2), 0.0, 1.0)[None]
        dry, moist = (np.array(c, dtype=np.float32)[:, None, None] for c in (SOIL, SOIL_MOIST))
        out[:] = (dry * (1 - mix) + moist * mix) * soil[None]

        veg = classes == VEGETATION
        if veg.any():
            trees = _burn([(t, 1) for ct in contents for t in ct.trees], region, res, np.uint8) > 0
            grass_texture = (
                1 + 0.16 * self._noise(3, region, 35.0) + 0.07 * self._noise(4, region, 2.5, 2)
            )
            crowns = np.clip(0.5 + 0.85 * self._noise(5, region, 6.0, 3), 0.0, 1.0)
            crown_texture = 0.45 + 1.0 * crowns
            for band in range(4):
                plane = out[band]
                plane[veg & ~trees] = (GRASS[band] * grass_texture)[veg & ~trees]
                plane[veg & trees] = (TREE[band] * crown_texture)[veg & trees]

        water = classes == WATER
        if water.any():
            river = _burn([(g, 1) for g in self.layout.rivers], region, res, np.uint8) > 0
            ripple = 1 + 0.06 * self._noise(6, region, 120.0)
            for band in range(4):
                colour = np.where(river, RIVER[band], LAKE[band]).astype(np.float32)
                out[band][water] = (colour * ripple)[water]

        road = classes == ROAD
        if road.any():
            kinds = self._road_kinds(region)
            wear = 1 + 0.05 * self._noise(7, region, 25.0) + 0.04 * self._noise(8, region, 1.5, 1)
            for band in range(4):
                table = np.array(
                    [ROAD_SURFACES[ROAD_KINDS["main"]][band]]
                    + [ROAD_SURFACES[kind][band] for kind in sorted(ROAD_SURFACES)],
                    dtype=np.float32,
                )
                out[band][road] = (table[kinds] * wear)[road]

        building = classes == BUILDING
        if building.any():
            self._paint_roofs(out, building, region, contents)
        return out

    def _paint_roofs(
        self, out: F32, building: NDArray[np.bool_], region: Window, contents: list[CellContent]
    ) -> None:
        """Paint the roofs of ``contents`` over the building pixels of ``out``."""
        res = self.spec.resolution
        roofs = [
            (part, i + 1) for i, (part, _, _) in enumerate(r for ct in contents for r in ct.roofs)
        ]
        flat = [(roof, bright) for ct in contents for _, roof, bright in ct.roofs]
        index = _burn(roofs, region, res, np.int32)
        colour_of = (
            np.vstack([np.zeros((1, 4), np.float32), ROOF_REFLECTANCE[[r for r, _ in flat]]])
            if flat
            else np.zeros((1, 4), np.float32)
        )
        bright_of = np.concatenate([[1.0], [b for _, b in flat]]).astype(np.float32)
        grain = 1 + 0.03 * self._noise(9, region, 2.0, 1)
        for band in range(4):
            out[band][building] = (colour_of[index, band] * bright_of[index] * grain)[building]

    def _road_kinds(self, region: Window) -> NDArray[np.uint8]:
        res = self.spec.resolution
        bounds = box(
            region.col_off * res, region.row_off * res, region.col_end * res, region.row_end * res
        )
        idx = self.layout.road_tree.query(bounds)
        shapes = sorted(
            ((self.layout.road_polygons[i], ROAD_KINDS[self.layout.roads[i].kind]) for i in idx),
            key=lambda s: -s[1],
        )  # main roads painted last, over streets
        return _burn(shapes, region, res, np.uint8)

    def _illumination(self, region: Window) -> F32:
        """Slow multiplicative variation: haze patches and a gradient across the scene."""
        patches = 1 + 0.06 * self._noise(10, region, 2500.0, 2)
        cols = (
            np.arange(region.col_off, region.col_end, dtype=np.float32) / max(1, self.spec.width)
            - 0.5
        )
        rows = (
            np.arange(region.row_off, region.row_end, dtype=np.float32) / max(1, self.spec.height)
            - 0.5
        )
        gradient = 1 + 0.07 * cols[None, :] - 0.04 * rows[:, None]
        return np.asarray(patches * gradient, dtype=np.float32)


def _burn(
    shapes: Iterable[tuple[BaseGeometry, int]], region: Window, resolution: float, dtype: type
) -> NDArray[Any]:
    """Rasterize (geometry, value) pairs, later ones on top, onto a pixel region."""
    transform = Affine(
        resolution, 0, region.col_off * resolution, 0, resolution, region.row_off * resolution
    )
    valid = [(g, v) for g, v in shapes if not g.is_empty]
    if not valid:
        return np.zeros(region.shape, dtype=dtype)
    burned: NDArray[Any] = rasterize(
        valid, out_shape=region.shape, transform=transform, fill=0, dtype=dtype
    )
    return burned


def _blur(planes: F32) -> F32:
    """Separable Gaussian blur (the sensor PSF); the outer PSF_RADIUS pixels are invalid."""
    taps = np.exp(-0.5 * (np.arange(-PSF_RADIUS, PSF_RADIUS + 1) / PSF_SIGMA) ** 2).astype(
        np.float32
    )
    taps /= taps.sum()
    out = np.zeros_like(planes)
    rows = planes.shape[1]
    for k, w in enumerate(taps):
        shift = k - PSF_RADIUS
        out[:, PSF_RADIUS : rows - PSF_RADIUS] += (
            w * planes[:, PSF_RADIUS + shift : rows - PSF_RADIUS + shift]
        )
    result = np.zeros_like(planes)
    cols = planes.shape[2]
    for k, w in enumerate(taps):
        shift = k - PSF_RADIUS
        result[:, :, PSF_RADIUS : cols - PSF_RADIUS] += (
            w * out[:, :, PSF_RADIUS + shift : cols - PSF_RADIUS + shift]
        )
    return result
