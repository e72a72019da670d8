"""Vectorization of class maps: block-wise polygonization, merged exactly across block lines.

Every block is polygonized on its own (``rasterio.features.shapes`` with 4-connectivity,
as a whole-raster pass would use) in global *pixel* coordinates, where every vertex is
an integer and every comparison is exact. Polygons that do not touch an interior block
line are final. The others ("edge pieces") are merged in the driver: two pieces of the
same class on either side of a block line belong to one polygon when they share a
stretch of that line of positive length (pieces meeting only at a corner are distinct
polygons under 4-connectivity). Each group is dissolved with a union (OverlayNG, exact
on integer coordinates) and its collinear vertices are removed, which gives exactly the
polygon that one pass over the whole raster would give.

Post-processing follows one-pass semantics:

- ``fill_holes``: interior rings smaller than the area (m² of ground, as ``area_m2``)
  are removed and whatever lay inside them is dropped (the surrounding polygon absorbs
  it, so nothing overlaps).
- ``min_area``: polygons smaller than the area (m² of ground, after hole filling) are
  dropped.
- ``simplify``: coverage simplification of each block with the block outline kept
  fixed, so neighbouring polygons keep sharing their edges inside a block and across
  block lines. Points where boundaries cross block lines stay where they are, so the
  simplified result depends (slightly) on the block size; no gaps or overlaps open.

Modules (all under ``terraseg.pipeline.vectorize``): :mod:`.config` (settings),
:mod:`.rasters` (what a task needs to know about a raster, reading its blocks),
:mod:`.pieces` (polygons in pixel coordinates), :mod:`.blocks` (the block task),
:mod:`.geometry` and :mod:`.holes` (geometry operations), :mod:`.merge` (joining edge
pieces), :mod:`.measure` (true areas and perimeters, whatever the CRS), :mod:`.features`
(attributes and Arrow scratch files), :mod:`.layers` and :mod:`.gpkg` (the GeoPackage),
:mod:`.ledger` (the blocks that reported, checked before commit) and :mod:`.driver` (the
one driver, written against :class:`terraseg.pipeline.executor.Executor`).
"""
