"""``terraseg demo``: the whole chain on generated scenes, with no set-up."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Folder for everything the demo makes.",
)
@click.option(
    "--force", "force", multiple=True, metavar="STEP", help="Redo this step even when current."
)
@click.pass_context
def demo(ctx: click.Context, /, out: Path, force: tuple[str, ...]) -> None:
    """Run the whole chain on generated scenes, with no set-up.

    Generates sample scenes, tiles them, trains and registers a small DeepLabV3+,
    predicts a held-back scene, vectorizes and evaluates it, and writes quick-looks.

    Everything goes into --out, the MLflow store included (OUT/mlflow.db). Run it
    again and finished steps are skipped.
    """
    from workflows.cli.run import step_runner
    from workflows.demo import demo_workflow, quicklooks, report
    from workflows.run_workflow import run_workflow

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    workflow = demo_workflow(f"sqlite:///{out / 'mlflow.db'}")
    execute, accepts = step_runner(ctx)
    run_workflow(workflow, out, execute, accepts, only=list(force))
    click.echo(report(out, quicklooks(out)))
