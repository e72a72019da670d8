"""``terraseg demo``: the whole chain on generated scenes, with no set-up."""

from __future__ import annotations

from contextlib import redirect_stdout
from pathlib import Path

import click

STEPS_LOG = "steps.log"  # in --out: what the steps print on stdout, appended run by run


@click.command()
@click.option(
    "-o",
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

    Everything goes into --out, the MLflow store included (OUT/mlflow.db, its
    artifacts in OUT/mlruns, by paths relative to OUT: the folder can be moved).
    The registered model version gets the held-back scene's scores as tags. Run
    it again and finished steps are skipped.

    The steps' own output (file lists, JSON records, tables) goes to OUT/steps.log;
    stdout gets the closing report, stderr warnings and errors.
    """
    from terraseg.pipeline.registry import record_held_back
    from terraseg.workflows.cli.run import step_runner
    from terraseg.workflows.demo import EXPERIMENT, MODEL_NAME, demo_workflow, quicklooks, report
    from terraseg.workflows.mlflow_tracking import movable_experiment
    from terraseg.workflows.run_workflow import run_workflow

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    experiment_id = movable_experiment(tracking_uri, EXPERIMENT)
    execute, accepts = step_runner(ctx)
    with (out / STEPS_LOG).open("a") as steps, redirect_stdout(steps):  # the report sums up
        run_workflow(demo_workflow(tracking_uri), out, execute, accepts, only=list(force))
    record_held_back(f"models:/{MODEL_NAME}@candidate", out / "metrics.json", tracking_uri)
    click.echo(report(out, quicklooks(out), experiment_id))
