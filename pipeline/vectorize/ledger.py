"""The record of which planned blocks reported a result in this run, checked before commit."""

from __future__ import annotations

from collections.abc import Sequence

from terraseg.pipeline.errors import IncompleteOutputError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.vectorize.blocks import block_plan
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.rasters import RasterInfo


class BlockLedger:
    """Which blocks of each raster (by position in the run's list) reported a result."""

    def __init__(self) -> None:
        self.reported: dict[int, set[Window]] = {}

    def report(self, raster: int, window: Window) -> None:
        """Record that the block ``window`` of raster number ``raster`` reported its result."""
        self.reported.setdefault(raster, set()).add(window)

    def check(self, infos: Sequence[RasterInfo], config: VectorizeConfig) -> int:
        """Check that every block of every raster's plan reported a result.

        Args:
            infos: The run's rasters, in the order they were numbered.
            config: Settings (the block size gives the plan).

        Returns:
            The number of blocks, over all rasters.

        Raises:
            IncompleteOutputError: A planned block of a raster reported nothing in
                this run (the error names the raster).
        """
        total = 0
        for number, info in enumerate(infos):
            planned = block_plan(info, config)
            reported = self.reported.get(number, set())
            missing = [w for w in planned if w not in reported]
            if missing:
                first = missing[0]
                raise IncompleteOutputError(
                    f"{len(missing)} of {len(planned)} blocks reported no result in this run "
                    f"(first at row {first.row_off}, column {first.col_off}); the output was "
                    "not committed, run again",
                    path=info.path,
                )
            total += len(planned)
        return total
