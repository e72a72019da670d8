"""Scene geometry: where roads, rivers, lakes, buildings and vegetation lie.

Coordinates are scene metres: ``u`` to the east and ``v`` to the south of the
scene's upper-left corner. Global features (the road network, rivers, lakes,
nodata areas) are few and generated once per scene. Buildings and vegetation
are generated per cell of :data:`CELL_M` metres from a random generator seeded
by (seed, scene, cell), so any part of a scene can be drawn without the rest.

Label classes never overlap. Precedence, highest first: building, road, water,
vegetation, background (background has no polygons). Label polygons are cut at
the cell grid, as map sheets would cut hand-digitized labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry

from terraseg.pipeline.synth.noise import noise_at

CELL_M = 512.0  # metres per generation cell
EMPTY = Polygon()

BUILDING, ROAD, WATER, VEGETATION = 1, 2, 3, 4
ROAD_KINDS = {"main": 1, "street": 2, "track": 3}
ROOF_COLOURS = 7  # see paint.ROOF_REFLECTANCE


@dataclass(frozen=True)
class SceneSpec:
    """One scene's identity and size: everything its content depends on."""

    seed: int
    index: int
    width: int  # pixels (columns)
    height: int  # pixels (rows)
    resolution: float  # metres per pixel
    nodata: str = "none"  # "none", "border", "holes" or "both"

    @property
    def width_m(self) -> float:
        """Scene width in metres."""
        return self.width * self.resolution

    @property
    def height_m(self) -> float:
        """Scene height in metres."""
        return self.height * self.resolution

    @property
    def cells(self) -> tuple[int, int]:
        """Generation cells along (v, u)."""
        return math.ceil(self.height_m / CELL_M), math.ceil(self.width_m / CELL_M)

    def rng(self, *key: int) -> np.random.Generator:
        """A generator for one purpose of this scene, independent of all others."""
        return np.random.default_rng([self.seed, self.index, *(k + (1 << 20) for k in key)])

    def density_seed(self) -> int:
        """Seed of the urban-density field."""
        return self.seed * 1_000_003 + self.index * 7 + 1


@dataclass
class RoadLine:
    """A road centreline with its paved width and kind."""

    line: LineString
    width: float
    kind: str


@dataclass
class Building:
    """A footprint, its roof parts (for gable shading) and what it looks like."""

    footprint: Polygon
    parts: list[tuple[Polygon, float]]  # (part, brightness factor)
    roof: int  # index into the roof colour table
    height: float  # metres, for the cast shadow


@dataclass
class CellContent:
    """Everything drawn in one cell: disjoint label pieces and appearance layers."""

    labels: list[tuple[BaseGeometry, int]] = field(default_factory=list)
    roofs: list[tuple[Polygon, int, float]] = field(default_factory=list)  # part, roof, brightness
    trees: list[Polygon] = field(default_factory=list)
    shadows: list[BaseGeometry] = field(default_factory=list)


def urban_density(spec: SceneSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """How built-up the land is at (u, v), in [0, 1]; smooth over about 1.5 km."""
    raw = noise_at(spec.density_seed(), u, v, 1500.0)
    return np.clip((raw - 0.2) / 0.6, 0.0, 1.0)


def _wobble(
    rng: np.random.Generator, amplitude: tuple[float, float]
) -> tuple[float, float, float, float, float]:
    a1, a2 = rng.uniform(*amplitude), rng.uniform(0, amplitude[1] / 3)
    l1, l2 = rng.uniform(700, 1800), rng.uniform(250, 600)
    return a1, l1, rng.uniform(0, 2 * np.pi), a2 + 0 * l2, l2


def _offset(params: tuple[float, float, float, float, float], t: np.ndarray) -> np.ndarray:
    a1, l1, phase, a2, l2 = params
    return np.asarray(
        a1 * np.sin(2 * np.pi * t / l1 + phase) + a2 * np.sin(2 * np.pi * t / l2 + 2 * phase)
    )


class SceneLayout:
    """Global features of one scene, built on first use and cached."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        rng = spec.rng(1)
        self.shadow_direction = self._sun(rng)
        self._main_u: list[tuple[float, tuple[float, float, float, float, float]]] = []
        self._main_v: list[tuple[float, tuple[float, float, float, float, float]]] = []
        self.roads = self._road_network(rng)
        self.rivers = self._rivers(spec.rng(2))
        self.lakes = self._lakes(spec.rng(3))

    @staticmethod
    def _sun(rng: np.random.Generator) -> tuple[float, float]:
        """Unit vector (u, v) pointing away from the sun, scaled by 1 / tan(elevation)."""
        azimuth = math.radians(rng.uniform(120, 240))  # sun in the southern sky
        elevation = math.radians(rng.uniform(35, 60))
        scale = 1.0 / math.tan(elevation)
        return (-math.sin(azimuth) * scale, math.cos(azimuth) * scale)

    def _road_network(self, rng: np.random.Generator) -> list[RoadLine]:
        spec = self.spec
        roads: list[RoadLine] = []
        margin = 80.0
        for axis_len, cross_len, store in (
            (spec.width_m, spec.height_m, self._main_u),
            (spec.height_m, spec.width_m, self._main_v),
        ):
            position = rng.uniform(60, 450)
            while position < axis_len + 200:
                store.append((position, _wobble(rng, (10, 45))))
                position += rng.uniform(380, 750)
            t = np.arange(-margin, cross_len + margin + 25, 25.0)
            for base, params in store:
                offset = base + _offset(params, t)
                coords = (
                    np.column_stack([offset, t])
                    if store is self._main_u
                    else np.column_stack([t, offset])
                )
                roads.append(RoadLine(LineString(coords), rng.uniform(9, 13), "main"))
        roads.extend(self._streets(rng))
        return roads

    def _main_position(self, index: int, t: float, vertical: bool) -> float:
        base, params = (self._main_u if vertical else self._main_v)[index]
        return float(base + _offset(params, np.array([t]))[0])

    def _streets(self, rng: np.random.Generator) -> list[RoadLine]:
        """Streets across the blocks between main roads, more where it is urban."""
        streets: list[RoadLine] = []
        for i in range(len(self._main_u) - 1):
            for j in range(len(self._main_v) - 1):
                u0, u1 = self._main_u[i][0], self._main_u[i + 1][0]
                v0, v1 = self._main_v[j][0], self._main_v[j + 1][0]
                density = float(
                    urban_density(self.spec, np.array([(u0 + u1) / 2]), np.array([(v0 + v1) / 2]))[
                        0
                    ]
                )
                horizontal = rng.random() < 0.5
                if density > 0.35:
                    count = 1 + min(3, int((density - 0.35) * 8))
                    kind, width = "street", rng.uniform(6, 8)
                elif rng.random() < 0.35:
                    count, kind, width = 1, "track", rng.uniform(3.5, 5)
                else:
                    continue
                for k in range(count):
                    fraction = (k + 1) / (count + 1) + rng.uniform(-0.06, 0.06)
                    if horizontal:
                        v = v0 + fraction * (v1 - v0)
                        a = (self._main_position(i, v, True), v)
                        b = (self._main_position(i + 1, v, True), v + rng.uniform(-15, 15))
                    else:
                        u = u0 + fraction * (u1 - u0)
                        a = (u, self._main_position(j, u, False))
                        b = (u + rng.uniform(-15, 15), self._main_position(j + 1, u, False))
                    streets.append(RoadLine(LineString([a, b]), width, kind))
        return streets

    def _rivers(self, rng: np.random.Generator) -> list[Polygon]:
        spec = self.spec
        if rng.random() > 0.6:
            return []
        along_u = rng.random() < 0.5
        length, across = (spec.width_m, spec.height_m) if along_u else (spec.height_m, spec.width_m)
        t = np.arange(-100, length + 120, 15.0)
        base = rng.uniform(0.15, 0.85) * across
        params = (
            rng.uniform(60, 220),
            rng.uniform(900, 2600),
            rng.uniform(0, 6.28),
            rng.uniform(5, 30),
            rng.uniform(200, 500),
        )
        offset = base + _offset(params, t)
        coords = np.column_stack([t, offset]) if along_u else np.column_stack([offset, t])
        return [LineString(coords).buffer(rng.uniform(7, 18), quad_segs=4)]

    def _lakes(self, rng: np.random.Generator) -> list[Polygon]:
        spec = self.spec
        count = rng.poisson(max(0.3, spec.width_m * spec.height_m / 1e6 * 0.5))
        lakes = []
        for _ in range(count):
            centre = (rng.uniform(0, spec.width_m), rng.uniform(0, spec.height_m))
            lake = blob(rng, centre, rng.uniform(25, 110))
            if not lake.intersects(self.road_union):
                lakes.append(lake)
        return lakes

    @cached_property
    def road_polygons(self) -> list[Polygon]:
        """One buffered polygon per road line (same order as :attr:`roads`)."""
        return [
            road.line.buffer(
                road.width / 2, quad_segs=4, cap_style="flat" if road.kind != "main" else "round"
            )
            for road in self.roads
        ]

    @cached_property
    def road_tree(self) -> shapely.STRtree:
        """Spatial index over :attr:`road_polygons`."""
        return shapely.STRtree(self.road_polygons)

    @cached_property
    def road_union(self) -> BaseGeometry:
        """All paved area as one geometry."""
        union = shapely.union_all(self.road_polygons)
        shapely.prepare(union)
        return union

    @cached_property
    def water_union(self) -> BaseGeometry:
        """Rivers and lakes, minus bridges."""
        union = shapely.difference(shapely.union_all([*self.rivers, *self.lakes]), self.road_union)
        shapely.prepare(union)
        return union

    @cached_property
    def nodata_area(self) -> BaseGeometry:
        """Where the sensor recorded nothing: outside a rotated swath, and cloud holes."""
        spec, rng = self.spec, self.spec.rng(4)
        parts: list[BaseGeometry] = []
        scene = box(0, 0, spec.width_m, spec.height_m)
        if spec.nodata in ("border", "both"):
            swath = affinity.rotate(affinity.scale(scene, 0.94, 0.94), rng.uniform(6, 12))
            parts.append(scene.difference(swath))
        if spec.nodata in ("holes", "both"):
            size = min(spec.width_m, spec.height_m)
            for _ in range(rng.integers(2, 5)):
                centre = (
                    rng.uniform(0.2, 0.8) * spec.width_m,
                    rng.uniform(0.2, 0.8) * spec.height_m,
                )
                parts.append(blob(rng, centre, rng.uniform(0.03, 0.08) * size))
        return shapely.union_all(parts) if parts else EMPTY


def blob(
    rng: np.random.Generator, centre: tuple[float, float], radius: float, vertices: int = 48
) -> Polygon:
    """A smooth, star-shaped polygon: a circle whose radius varies with a few harmonics."""
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, 0.35 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.35, None)
    return Polygon(np.column_stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)]))


def _rectangle(centre: tuple[float, float], length: float, depth: float, angle: float) -> Polygon:
    rect = box(-length / 2, -depth / 2, length / 2, depth / 2)
    return affinity.translate(
        affinity.rotate(rect, angle, origin=(0, 0), use_radians=True), *centre
    )


def _gable_parts(
    centre: tuple[float, float], length: float, depth: float, angle: float
) -> list[tuple[Polygon, float]]:
    """A rectangle split along its long axis into a lit and a shaded roof half."""
    if depth > length:
        length, depth, angle = depth, length, angle + math.pi / 2
    offset = (-math.sin(angle) * depth / 4, math.cos(angle) * depth / 4)
    halves = []
    for sign, brightness in ((1, 1.0), (-1, 0.78)):
        half_centre = (centre[0] + sign * offset[0], centre[1] + sign * offset[1])
        halves.append((_rectangle(half_centre, length, depth / 2, angle), brightness))
    return halves


def _building_at(
    rng: np.random.Generator, centre: tuple[float, float], angle: float, large: bool
) -> Building:
    length = rng.uniform(14, 40) if large else rng.uniform(8, 20)
    depth = rng.uniform(10, 22) if large else rng.uniform(8, 14)
    parts = _gable_parts(centre, length, depth, angle)
    footprint = _rectangle(centre, length, depth, angle)
    if not large and rng.random() < 0.3:  # L-shape: a wing at one end, towards the back
        wing_len, wing_depth = depth * rng.uniform(0.5, 0.9), length * rng.uniform(0.35, 0.55)
        along = (math.cos(angle), math.sin(angle))
        back = (-math.sin(angle), math.cos(angle))
        side = rng.choice([-1.0, 1.0])
        wing_centre = (
            centre[0]
            + side * along[0] * (length - wing_depth) / 2
            + back[0] * (depth + wing_len) / 2 * 0.98,
            centre[1]
            + side * along[1] * (length - wing_depth) / 2
            + back[1] * (depth + wing_len) / 2 * 0.98,
        )
        wing_angle = angle + math.pi / 2
        parts += _gable_parts(wing_centre, wing_len, wing_depth, wing_angle)
        footprint = shapely.union(
            footprint, _rectangle(wing_centre, wing_len, wing_depth, wing_angle)
        )
    roof = int(rng.choice(ROOF_COLOURS, p=[0.24, 0.2, 0.2, 0.1, 0.12, 0.06, 0.08]))
    return Building(
        footprint, parts, roof, rng.uniform(3.5, 7) if not large else rng.uniform(5, 14)
    )


class CellGenerator:
    """Draws the buildings and vegetation of single cells of one scene."""

    def __init__(self, layout: SceneLayout) -> None:
        self.layout = layout
        self.spec = layout.spec
        self.scene_box = box(0, 0, self.spec.width_m, self.spec.height_m)
        self._vegetation: dict[tuple[int, int], tuple[list[Polygon], list[Polygon]]] = {}

    def cell_box(self, ci: int, cj: int) -> Polygon:
        """The cell's square, clipped to the scene."""
        return shapely.intersection(
            box(cj * CELL_M, ci * CELL_M, (cj + 1) * CELL_M, (ci + 1) * CELL_M), self.scene_box
        )

    def buildings(self, ci: int, cj: int) -> list[Building]:
        """Buildings wholly inside the cell: along roads where it is urban, farms elsewhere."""
        rng = self.spec.rng(10, ci, cj)
        area = self.cell_box(ci, cj)
        if area.is_empty:
            return []
        inner = area.buffer(-1.0)
        placed: list[Building] = []
        footprints: list[Polygon] = []

        def try_place(building: Building) -> None:
            shape = building.footprint
            if not inner.contains(shape):
                return
            guard = shape.buffer(1.5, quad_segs=1)
            if self.layout.road_union.intersects(guard) or self.layout.water_union.intersects(
                guard
            ):
                return
            if footprints and shapely.intersects(np.array(footprints), guard).any():
                return
            placed.append(building)
            footprints.append(shape)

        self._along_roads(rng, area, try_place)
        farms = rng.poisson(area.area / 1e6 * 12)
        for _ in range(farms):
            x0, y0, x1, y1 = area.bounds
            centre = (rng.uniform(x0, x1), rng.uniform(y0, y1))
            if urban_density(self.spec, np.array([centre[0]]), np.array([centre[1]]))[0] < 0.3:
                try_place(_building_at(rng, centre, rng.uniform(0, math.pi), large=True))
        return placed

    def _along_roads(
        self, rng: np.random.Generator, area: Polygon, try_place: Callable[[Building], None]
    ) -> None:
        """Offer buildings along every road but tracks crossing ``area``, in road order."""
        for index in self.layout.road_tree.query(area):
            road = self.layout.roads[index]
            if road.kind == "track":
                continue
            piece = road.line.intersection(area)
            for line in getattr(piece, "geoms", [piece]):
                if line.is_empty or line.length < 10:
                    continue
                for position in np.arange(rng.uniform(0, 10), line.length, rng.uniform(14, 26)):
                    self._place_along(rng, line, float(position), road.width, try_place)

    def _place_along(
        self,
        rng: np.random.Generator,
        line: LineString,
        position: float,
        width: float,
        try_place: object,
    ) -> None:
        a = line.interpolate(max(0.0, position - 1))
        b = line.interpolate(min(line.length, position + 1))
        angle = math.atan2(b.y - a.y, b.x - a.x)
        normal = (-math.sin(angle), math.cos(angle))
        point = line.interpolate(position)
        density = float(urban_density(self.spec, np.array([point.x]), np.array([point.y]))[0])
        for side in (-1.0, 1.0):
            if rng.random() > density * 1.1 - 0.15:
                continue
            depth_guess = 12.0
            setback = width / 2 + rng.uniform(4, 12) + depth_guess / 2
            centre = (point.x + side * normal[0] * setback, point.y + side * normal[1] * setback)
            jitter = math.radians(rng.uniform(-3, 3))
            building = _building_at(
                rng, centre, angle + jitter + (math.pi if side < 0 else 0), large=False
            )
            try_place(building)  # type: ignore[operator]

    def vegetation(self, ci: int, cj: int) -> tuple[list[Polygon], list[Polygon]]:
        """Raw (unclipped) tree and grass shapes seeded in the cell; they may reach past it."""
        rng = self.spec.rng(20, ci, cj)
        x0, y0 = cj * CELL_M, ci * CELL_M
        density = float(
            urban_density(self.spec, np.array([x0 + CELL_M / 2]), np.array([y0 + CELL_M / 2]))[0]
        )
        trees: list[Polygon] = []
        grass: list[Polygon] = []
        for _ in range(rng.poisson((1 - density) * 1.6)):
            trees.append(
                blob(
                    rng,
                    (x0 + rng.uniform(0, CELL_M), y0 + rng.uniform(0, CELL_M)),
                    rng.uniform(35, 130),
                )
            )
        for _ in range(rng.poisson((1 - density) * 2.5 + density * 1.0)):
            centre = (x0 + rng.uniform(0, CELL_M), y0 + rng.uniform(0, CELL_M))
            scale = 1.0 - 0.6 * density
            grass.append(
                _rectangle(
                    centre,
                    rng.uniform(60, 200) * scale,
                    rng.uniform(40, 140) * scale,
                    rng.uniform(0, math.pi),
                )
            )
        crowns = rng.poisson(density * 220 + 15)
        for _ in range(crowns):
            centre = (x0 + rng.uniform(0, CELL_M), y0 + rng.uniform(0, CELL_M))
            trees.append(shapely.Point(centre).buffer(rng.uniform(2.0, 5.0), quad_segs=4))
        return trees, grass

    def _vegetation_cached(self, ci: int, cj: int) -> tuple[list[Polygon], list[Polygon]]:
        key = (ci, cj)
        if key not in self._vegetation:
            if len(self._vegetation) >= 512:
                self._vegetation.pop(next(iter(self._vegetation)))
            self._vegetation[key] = self.vegetation(ci, cj)
        return self._vegetation[key]

    def content(self, ci: int, cj: int) -> CellContent:
        """Disjoint label pieces of the cell and the layers that paint them."""
        area = self.cell_box(ci, cj)
        content = CellContent()
        if area.is_empty:
            return content
        buildings = self.buildings(ci, cj)
        trees: list[Polygon] = []
        grass: list[Polygon] = []
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                t, g = self._vegetation_cached(ci + di, cj + dj)
                trees += t
                grass += g
        trees = _touching(trees, area)
        grass = _touching(grass, area)
        roads = shapely.intersection(self.layout.road_union, area)
        water = shapely.intersection(self.layout.water_union, area)
        built = shapely.union_all([b.footprint for b in buildings]) if buildings else EMPTY
        veg = (
            shapely.intersection(shapely.union_all(trees + grass), area)
            if trees or grass
            else EMPTY
        )
        veg = shapely.difference(veg, shapely.union_all([roads, water, built]))
        for geometry, class_id in ((water, WATER), (veg, VEGETATION), (roads, ROAD)):
            content.labels += [(part, class_id) for part in _polygons(geometry)]
        content.labels += [(b.footprint, BUILDING) for b in buildings]
        content.roofs = [(part, b.roof, bright) for b in buildings for part, bright in b.parts]
        content.trees = trees
        content.shadows = self._shadows(
            rng_heights=self.spec.rng(30, ci, cj), buildings=buildings, trees=content.trees
        )
        return content

    def _shadows(
        self, rng_heights: np.random.Generator, buildings: list[Building], trees: list[Polygon]
    ) -> list[BaseGeometry]:
        du, dv = self.layout.shadow_direction
        shadows: list[BaseGeometry] = []
        for b in buildings:
            moved = affinity.translate(b.footprint, du * b.height, dv * b.height)
            swept = (
                shapely.union(b.footprint, moved).convex_hull
                if len(b.parts) == 2
                else shapely.union_all(
                    [
                        shapely.union(
                            p, affinity.translate(p, du * b.height, dv * b.height)
                        ).convex_hull
                        for p, _ in b.parts
                    ]
                )
            )
            shadows.append(swept.difference(b.footprint))
        for tree in trees:
            height = rng_heights.uniform(4, 12)
            moved = affinity.translate(tree, du * height, dv * height)
            if tree.area < 200:  # a single crown: sweep it, so the shadow starts at the trunk
                moved = shapely.union(tree, moved).convex_hull
            shadows.append(moved.difference(tree))
        return shadows


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    """The non-empty polygon parts of any geometry."""
    if not shapely.is_valid(geometry):
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    parts = shapely.get_parts(geometry)
    return [p for p in parts if isinstance(p, Polygon) and not p.is_empty and p.area > 0]


def _touching(shapes: list[Polygon], area: Polygon) -> list[Polygon]:
    """The shapes that intersect ``area``."""
    if not shapes:
        return []
    mask = shapely.intersects(np.array(shapes, dtype=object), area)
    return [shape for shape, hit in zip(shapes, mask, strict=True) if hit]
