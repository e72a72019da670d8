"""Tiling rasters and labels into the training store (``terraseg tile``).

The modules, in the order the work runs:

- :mod:`~pipeline.tiling.config`: the settings (:class:`TileConfig`).
- :mod:`~pipeline.tiling.labels`: label sources (vector files, label rasters,
  image/mask pairs) and the label of one window.
- :mod:`~pipeline.tiling.plan`: every input checked and each scene planned before
  any pixel is read (:func:`prepare_tiling`, :class:`ScenePlan`).
- :mod:`~pipeline.tiling.store`: the store opened for a run, scenes created,
  chunks written.
- :mod:`~pipeline.tiling.chunks`: the task of one window (read, label, write,
  summarize) and its mergeable summary.
- :mod:`~pipeline.tiling.stats`: per-band statistics from mergeable summaries.
- :mod:`~pipeline.tiling.finish` and :mod:`~pipeline.tiling.split`: each scene's
  tile index, then the store's train/validation split and statistics.
- :mod:`~pipeline.tiling.driver`: the one driver (:func:`tile_scenes`), which runs
  the tasks through any :class:`pipeline.executor.Executor`.
"""

from pipeline.tiling.config import TileConfig
from pipeline.tiling.driver import tile_scenes
from pipeline.tiling.plan import ScenePlan, prepare_tiling
from pipeline.tiling.split import assign_splits

__all__ = ["ScenePlan", "TileConfig", "assign_splits", "prepare_tiling", "tile_scenes"]
