"""``terraseg train``: a DeepLabV3+ on a Zarr training store, on one or several devices."""

from __future__ import annotations

import time
from pathlib import Path
from typing import get_args

import click

from terraseg.pipeline.model.config import BackboneName
from terraseg.workflows.cli.options import (
    Location,
    config_opt,
    note_output,
    overwrite_opt,
    show_progress,
    tracking_uri_opt,
)


@click.command()
@click.option(
    "--data",
    required=True,
    type=Location(exists=True, path_type=Path),
    help="The Zarr store written by `terraseg tile`.",
)
@click.option(
    "-o",
    "--out",
    type=Location(file_okay=False, path_type=Path),
    default=None,
    help="Run folder [runs/<date>-<time>]; s3://BUCKET/PREFIX: uploaded when finished.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--backbone",
    "model__backbone",
    type=click.Choice(get_args(BackboneName)),
    default=None,
    help="Encoder [mobilenetv2].",
)
@click.option(
    "--width-multiplier",
    "model__width_multiplier",
    type=float,
    default=None,
    help="Scale all channel counts of the model [1].",
)
@click.option(
    "--members",
    "model__members",
    type=click.IntRange(min=0, max=8),
    default=None,
    help="Networks averaged, a deep ensemble [0: 3 below 1 million labelled training "
    "pixels, else 1].",
)
@click.option(
    "--devices",
    "devices",
    type=click.IntRange(min=1),
    default=None,
    help="Processes on this machine, one per GPU [1].",
)
@click.option(
    "--accelerator",
    "accelerator",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Device kind [auto: CUDA when available].",
)
@click.option("--epochs", "epochs", type=click.IntRange(min=1), default=None, help="Epochs [30].")
@click.option(
    "--batch-size",
    "data__batch_size",
    type=click.IntRange(min=2),
    default=None,
    help="Crops per process and step [8].",
)
@click.option(
    "--crop-size",
    "data__crop_size",
    type=click.IntRange(min=16),
    default=None,
    help="Training crop side in pixels [512].",
)
@click.option(
    "--samples-per-epoch",
    "data__samples_per_epoch",
    type=click.IntRange(min=0),
    default=None,
    help="Crops per epoch over all processes [one per tile].",
)
@click.option(
    "--num-workers",
    "data__num_workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader workers per process [2].",
)
@click.option(
    "--optimizer",
    "optimizer__name",
    type=click.Choice(["sgd", "adamw"]),
    default=None,
    help="sgd (momentum 0.9, the paper's) or adamw [adamw].",
)
@click.option(
    "--schedule",
    "schedule__name",
    type=click.Choice(["poly", "cosine"]),
    default=None,
    help="Learning-rate decay [cosine].",
)
@click.option(
    "--lr",
    "optimizer__lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Peak learning rate [0.002].",
)
@click.option(
    "--precision",
    "precision",
    type=click.Choice(["bf16", "fp16", "fp32"]),
    default=None,
    help="Autocast on CUDA [bf16; fp16 with loss scaling on GPUs before compute capability 8.0].",
)
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the model.")
@click.option(
    "--patience",
    "patience",
    type=click.IntRange(min=0),
    default=None,
    help="Early stopping after N epochs without a better mIoU [0: off].",
)
@click.option(
    "--threads",
    "threads",
    type=click.IntRange(min=0),
    default=None,
    help="CPU threads per process [0: torch's default].",
)
@click.option("--seed", "seed", type=click.IntRange(min=0), default=None, help="Seed [0].")
@click.option(
    "--experiment", "tracking__experiment", default=None, help="MLflow experiment [terraseg]."
)
@click.option("--run-name", "tracking__run_name", default=None, help="MLflow run name.")
@click.option(
    "--register",
    "tracking__register_as",
    default=None,
    metavar="NAME",
    help="Register the model as a new version of NAME.",
)
@click.option(
    "--alias", "tracking__alias", default=None, help="Point this alias at the new version."
)
@click.option(
    "--track/--no-track",
    "tracking__enabled",
    default=None,
    help="Record the run in MLflow [track].",
)
@tracking_uri_opt
@config_opt
@overwrite_opt
@click.pass_context
def train(
    ctx: click.Context,
    /,
    data: Path,
    out: Path | None,
    resume: bool,
    tracking_uri: str | None,
    config_path: Path | None,
    overwrite: bool,
    **options: object,
) -> None:
    """Train DeepLabV3+ on the store --data and write checkpoints and the model to --out.

    Prints a JSON summary (best epoch, validation mean IoU, per-class IoU, paths).
    With --devices N, N processes train with DistributedDataParallel (NCCL on GPUs,
    gloo on CPU); started under torchrun, the command joins torchrun's group.
    """
    from terraseg.pipeline.files import json_text
    from terraseg.workflows.api.train import train as train_model
    from terraseg.workflows.tracking_fallback import TRACKING_INCOMPLETE

    if resume and out is None:
        raise click.UsageError("--resume needs --out, the folder of the run to continue")
    if options.get("tracking__alias") and not options.get("tracking__register_as"):
        raise click.UsageError("--alias needs --register NAME")
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    note_output(ctx, out.resolve())
    summary = train_model(
        data,
        out,
        resume=resume,
        overwrite=overwrite,
        tracking_uri=tracking_uri,
        config=config_path,
        progress=show_progress(ctx),
        **{key.replace("__", "."): value for key, value in options.items()},
    )
    click.echo(json_text(summary, indent=2))
    if "tracking" in summary:  # trained, but the tracking store did not take everything
        click.echo(f"Error: {out.resolve()}: {not_logged(summary['tracking'])}", err=True)
        ctx.exit(TRACKING_INCOMPLETE)


def not_logged(tracking: dict[str, object]) -> str:
    """One line on what the tracking store did not take, and how to send it later."""
    head = "model not registered" if tracking["registered"] is False else "not all logged"
    return (
        f"{head}: the tracking store stopped answering ({tracking['reason']}); "
        f"{tracking['not_logged']} wait in {tracking['pending']}: run `{tracking['sync']}` "
        "once it answers"
    )
