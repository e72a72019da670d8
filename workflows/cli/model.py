"""``terraseg model``: inspect the DeepLabV3+ model a configuration describes; calibrate one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import click

from terraseg.pipeline.model.config import BackboneName, ModelConfig
from terraseg.workflows.cli.options import config_opt, renamed_opt, resolve_config, tracking_uri_opt

if TYPE_CHECKING:
    from terraseg.pipeline.model.complexity import Complexity


@click.group()
def model() -> None:
    """Inspect the DeepLabV3+ model; calibrate a trained one for int8 prediction."""


@model.command()
@config_opt
@click.option(
    "--backbone", type=click.Choice(get_args(BackboneName)), default=None, help="Encoder."
)
@click.option("--output-stride", type=click.Choice(["8", "16"]), default=None, help="8 or 16.")
@click.option("--num-bands", "bands", type=click.IntRange(min=1), default=None,
              help="Number of input bands.")  # fmt: skip
@click.option("--num-classes", "classes", type=click.IntRange(min=1), default=None,
              help="Number of output classes.")  # fmt: skip
@renamed_opt("--bands", "--num-bands", "the number of input bands")
@renamed_opt("--classes", "--num-classes", "the number of output classes")
@click.option("--decoder/--no-decoder", default=None, help="Decoder, or bilinear upsampling (BU).")
@click.option(
    "--width-multiplier", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Scale all channel counts (1 is the paper's model).",
)  # fmt: skip
@click.option(
    "--tile-size", type=click.IntRange(min=1), default=512, show_default=True,
    help="Tile rows and columns.",
)  # fmt: skip
@click.option(
    "--time-runs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Also time this many CPU forward passes (after one warm-up) and print the median.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(
    config_path: Path | None,
    backbone: str | None,
    output_stride: str | None,
    bands: int | None,
    classes: int | None,
    decoder: bool | None,
    width_multiplier: float | None,
    tile_size: int,
    time_runs: int,
    as_json: bool,
) -> None:
    """Print parameters and multiply-adds per tile, measured on the built model."""
    from terraseg.pipeline.model.complexity import measure_complexity, time_forward
    from terraseg.pipeline.model.deeplab import build_model

    config = resolve_config(
        ModelConfig,
        config_path,
        {
            "backbone": backbone,
            "output_stride": None if output_stride is None else int(output_stride),
            "in_channels": bands,
            "num_classes": classes,
            "decoder": decoder,
            "width_multiplier": width_multiplier,
        },
    )
    tile = (tile_size, tile_size)
    complexity = measure_complexity(config, tile)
    forward_ms = None
    if time_runs:
        cpu_config = config.model_copy(update={"pretrained_weights": None})
        forward_ms = time_forward(build_model(cpu_config), tile, time_runs)
    click.echo(_as_json(complexity, forward_ms) if as_json else _as_table(complexity, forward_ms))


@model.command()
@click.argument("model_ref", metavar="MODEL")
@click.option(
    "--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A training store (terraseg tile) with the model's bands.",
)  # fmt: skip
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the calibrated copy of the model.",
)  # fmt: skip
@click.option(
    "--tiles", type=click.IntRange(min=1), default=32, show_default=True,
    help="Validation tiles to observe (training tiles when the store has no validation split).",
)  # fmt: skip
@tracking_uri_opt
def calibrate(
    model_ref: str, data: Path, out_dir: Path, tiles: int, tracking_uri: str | None
) -> None:
    """Store int8 activation ranges with a copy of MODEL (a folder or a model URI).

    Training stores them itself; this is for a model trained without them. The
    copy in OUT predicts with ``--precision int8``.
    """
    from terraseg.pipeline.artifact import save_artifact
    from terraseg.pipeline.prediction.inference import open_model
    from terraseg.pipeline.training.calibration import calibrate_artifact

    artifact = calibrate_artifact(open_model(model_ref, tracking_uri), str(data), tiles)
    click.echo(str(save_artifact(artifact, out_dir)))


def _as_table(complexity: Complexity, forward_ms: float | None) -> str:
    config = complexity.config
    rows, cols = complexity.tile
    lines = [
        f"DeepLabV3+ {config.backbone}, output stride {config.output_stride}, "
        f"{'decoder' if config.decoder else 'no decoder (BU)'}, "
        f"width {config.width_multiplier:g}; {config.in_channels} bands, "
        f"{config.num_classes} classes; tile {rows} x {cols}",
        f"{'part':<10}{'parameters':>14}{'multiply-adds':>16}",
    ]
    for part in complexity.parts:
        lines.append(f"{part.name:<10}{part.parameters:>14,}{part.macs / 1e9:>15.2f}G")
    lines.append(f"{'total':<10}{complexity.parameters:>14,}{complexity.macs / 1e9:>15.2f}G")
    if forward_ms is not None:
        lines.append(f"CPU forward per tile: {forward_ms:.0f} ms (median, batch 1)")
    return "\n".join(lines)


def _as_json(complexity: Complexity, forward_ms: float | None) -> str:
    return json.dumps(
        {
            "config": complexity.config.model_dump(mode="json"),
            "tile": list(complexity.tile),
            "parameters": complexity.parameters,
            "multiply_adds": complexity.macs,
            "parts": {p.name: {"parameters": p.parameters, "multiply_adds": p.macs}
                      for p in complexity.parts},
            "forward_ms": forward_ms,
        },
        indent=2,
    )  # fmt: skip
