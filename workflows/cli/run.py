"""``terraseg run``: a workflow file of chained stages, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from workflows.cli.options import scheduler_opt


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
@scheduler_opt
@click.pass_context
def run(
    ctx: click.Context,
    /,
    workflow_file: Path,
    workdir: Path | None,
    force: tuple[str, ...],
    scheduler: str | None,
) -> None:
    """Run the steps of WORKFLOW_FILE in order, skipping steps whose outputs are current.

    Re-running an interrupted workflow resumes at the step that did not finish.
    """
    from pipeline.errors import TerrasegError
    from workflows.run_workflow import load_workflow, run_workflow

    workflow = load_workflow(workflow_file)
    if scheduler:
        workflow = workflow.model_copy(update={"scheduler": scheduler})
    folder = (workdir or workflow_file.parent).resolve()
    root = ctx.find_root()
    verbosity = _verbosity(root)

    def execute(line: list[str]) -> None:
        code = root.command.main([*verbosity, *line], standalone_mode=False)
        if isinstance(code, int) and code != 0:  # the command has printed its error
            raise TerrasegError(f"step `terraseg {' '.join(line)}` failed; fix it and run again")

    results = run_workflow(
        workflow, folder, execute, lambda name: _accepts_scheduler(root, name), only=list(force)
    )
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


def _accepts_scheduler(root: click.Context, name: str) -> bool:
    group = root.command
    assert isinstance(group, click.Group)
    command = group.get_command(root, name)
    return command is not None and any(p.name == "scheduler" for p in command.params)


def _verbosity(root: click.Context) -> list[str]:
    params = root.params
    return ["-v"] * int(params.get("verbose") or 0) + ["-q"] * int(params.get("quiet") or 0)
