"""Tiling rasters and labels into the training store (``terraseg tile``).

The modules, in the order the work runs:

- :mod:`~terraseg.pipeline.tiling.config`: the settings (:class:`TileConfig`).
- :mod:`~terraseg.pipeline.tiling.labels`: label sources (vector files, label rasters,
  image/mask pairs) and the label of one window.
- :mod:`~terraseg.pipeline.tiling.plan`: every input checked and each scene planned before
  any pixel is read (:func:`prepare_tiling`, :class:`ScenePlan`).
- :mod:`~terraseg.pipeline.tiling.store`: the store opened for a run, scenes created,
  chunks written.
- :mod:`~terraseg.pipeline.tiling.chunks`: the task of one window (read, label, write,
  summarize) and its mergeable summary.
- :mod:`~terraseg.pipeline.tiling.stats`: per-band statistics from mergeable summaries.
- :mod:`~terraseg.pipeline.tiling.finish` and :mod:`~terraseg.pipeline.tiling.split`: each scene's
  tile index, then the store's train/validation split and statistics.
- :mod:`~terraseg.pipeline.tiling.driver`: the one driver (:func:`tile_scenes`), which runs
  the tasks through any :class:`terraseg.pipeline.executor.Executor`.
"""

from terraseg.pipeline.tiling.config import TileConfig
from terraseg.pipeline.tiling.driver import tile_scenes
from terraseg.pipeline.tiling.plan import ScenePlan, prepare_tiling
from terraseg.pipeline.tiling.split import assign_splits

__all__ = ["ScenePlan", "TileConfig", "assign_splits", "prepare_tiling", "tile_scenes"]
