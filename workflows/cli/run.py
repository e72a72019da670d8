"""``terraseg run``: a workflow file of chained stages, resumable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from terraseg.workflows.cli.options import scheduler_opt


@click.command()
@click.argument("workflow_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder relative paths resolve against [the workflow file's folder].",
)
@click.option(
    "--force", "force", multiple=True, metavar="STEP", help="Run this step even when current."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="STEP.OPTION=VALUE",
    help="Set an option of a step for this run (VALUE read as YAML; STEP.args=[...] "
    "replaces its arguments), e.g. --set train.epochs=1.",
)
@scheduler_opt
@click.pass_context
def run(
    ctx: click.Context,
    /,
    workflow_file: Path,
    workdir: Path | None,
    force: tuple[str, ...],
    settings: tuple[str, ...],
    scheduler: str | None,
) -> None:
    """Run the steps of WORKFLOW_FILE in order, skipping steps whose outputs are current.

    Re-running an interrupted workflow resumes at the step that did not finish; a
    training step interrupted with unchanged settings continues from its last checkpoint.
    """
    from terraseg.workflows.run_workflow import apply_overrides, load_workflow, run_workflow

    workflow = apply_overrides(load_workflow(workflow_file), settings)
    if scheduler:
        workflow = workflow.model_copy(update={"scheduler": scheduler})
    folder = (workdir or workflow_file.parent).resolve()
    execute, accepts = step_runner(ctx)
    results = run_workflow(workflow, folder, execute, accepts, only=list(force))
    for result in results:
        click.echo(
            json.dumps(
                {
                    "step": result.name,
                    "skipped": result.skipped,
                    "seconds": round(result.seconds, 1),
                }
            )
        )


def step_runner(
    ctx: click.Context,
) -> tuple[Callable[[list[str]], None], Callable[[str, str], bool]]:
    """Run workflow steps as terraseg commands in this process, with this run's verbosity.

    Returns:
        A function running one command line (raising when it fails) and one telling
        whether a command takes an option (by parameter name, e.g. ``scheduler``).
    """
    from terraseg.pipeline.errors import TerrasegError

    root = ctx.find_root()
    group = root.command
    assert isinstance(group, click.Group)
    counts = (root.obj or {}).get("verbosity", {})  # given before and after the command
    verbosity = ["-v"] * int(counts.get("verbose", 0)) + ["-q"] * int(counts.get("quiet", 0))

    def execute(line: list[str]) -> None:
        code = group.main([*verbosity, *line], standalone_mode=False)
        if isinstance(code, int) and code != 0:  # the command has printed its error
            raise TerrasegError(f"step `terraseg {' '.join(line)}` failed; fix it and run again")

    def accepts(name: str, option: str) -> bool:
        command = group.get_command(root, name)
        return command is not None and any(p.name == option for p in command.params)

    return execute, accepts
