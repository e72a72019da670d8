"""Synthetic aerial scenes from Python: sample data for trying every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.synth.config import SynthConfig
from terraseg.workflows.api.settings import ConfigSource, stage_config

if TYPE_CHECKING:
    from terraseg.pipeline.synth.writer import SynthOutputs


def synth(
    out: str | Path, *, config: ConfigSource = None, progress: bool = False, **settings: Any
) -> SynthOutputs:
    """Write synthetic R, G, B, NIR scenes, their labels and a classes file into ``out``.

    Scenes show roads, buildings with cast shadows, rivers, lakes, forests and
    fields; the labels are the polygons they were painted from. The same seed
    always gives the same files.

    Args:
        out: The folder to write.
        config: A synth YAML file or :class:`SynthConfig`.
        progress: Draw a progress bar on stderr.
        **settings: Synth settings as in ``configs/synth.yaml`` (``scenes``,
            ``size``, ``seed``, ``labels``...).

    Returns:
        The scenes, the label files and the classes file written.
    """
    from tqdm import tqdm

    from terraseg.pipeline.synth.writer import pixel_count, synthesize

    synth_config = stage_config(SynthConfig, config, settings)
    with tqdm(total=pixel_count(synth_config), unit="px", unit_scale=True, desc="painting",
              disable=not progress, leave=False) as bar:  # fmt: skip
        return synthesize(synth_config, out, progress=bar.update)
