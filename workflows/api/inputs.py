"""The rasters a stage reads: files, folders, globs and lists, or band-file scenes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def scene_inputs(
    inputs: Sequence[str | Path],
    band_files: list[str] | None,
    recursive: bool,
    resampling: str,
    stacks: Path,
) -> list[Path]:
    """The rasters of ``inputs``: files, folders, globs and lists, or band-file scenes.

    Band-file scenes are stacked into VRTs under ``stacks``.
    """
    from terraseg.pipeline.bandfiles import find_band_scenes, write_stack_vrt
    from terraseg.pipeline.rasters import expand_inputs

    if band_files is None:
        return expand_inputs(inputs)
    scenes = find_band_scenes([str(item) for item in inputs], band_files, recursive=recursive)
    return [write_stack_vrt(scene, stacks, resampling) for scene in scenes]
