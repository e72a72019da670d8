"""``terraseg sync``: log what a training run kept while its tracking store was away."""

from __future__ import annotations

import json
from pathlib import Path

import click

from terraseg.workflows.cli.options import tracking_uri_opt


@click.command(short_help="Log what a training run kept while its tracking store was away.")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@tracking_uri_opt
def sync(run: Path, tracking_uri: str | None) -> None:
    """Send the calls training RUN kept in RUN/tracking_pending.jsonl to its MLflow run.

    When the tracking store stops answering during training, training goes on and
    keeps what it could not log (metrics, files, the model) in the run folder. This
    sends it to the same MLflow run, registers the model as the run's config asks
    (--register, --alias), and ends the run. Prints what was sent as JSON.
    """
    from terraseg.pipeline.registry import resolve_tracking_uri
    from terraseg.workflows.tracking_fallback import sync_run

    result = sync_run(run.resolve(), resolve_tracking_uri(tracking_uri))
    click.echo(json.dumps(result))
