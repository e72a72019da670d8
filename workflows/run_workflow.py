"""Workflow files: stages chained in YAML, each skipped when its outputs are current.

A workflow names steps; each step is a terraseg command with its arguments and
options, exactly as on the command line, and the outputs it makes::

    scheduler: null                  # or tcp://host:8786 for every step that takes one
    steps:
      - name: tile
        command: tile
        args: [images/]
        options: {labels: labels.gpkg, out: dataset.zarr, tile-size: 512}
        outputs: [dataset.zarr]

Relative paths resolve against the working folder (the workflow file's folder by
default). After a step succeeds, a stamp in ``.terraseg-run/`` records a hash of
its command, arguments, options, the size and modification time of the input
files it names, and the stamps of the steps before it. A step whose outputs exist
and whose stamp matches is skipped, so re-running an interrupted workflow resumes
at the step that did not finish (which itself resumes where it can: tiling and
prediction skip finished scenes and files, training resumes from its checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline.files import write_json
from pipeline.settings import StrictModel, build_config, load_yaml

logger = logging.getLogger(__name__)
STAMPS = ".terraseg-run"


class Step(StrictModel):
    """One stage of a workflow: a terraseg command, its arguments and options, its outputs."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Unique name of the step (letters, digits, _ . -; names its stamp file).",
    )
    command: str = Field(description="The terraseg command, e.g. tile, train, predict, vectorize.")
    args: list[str] = Field(default_factory=list, description="Positional arguments.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options without leading dashes."
    )
    outputs: list[str] = Field(default_factory=list, description="Paths the step makes.")


class Workflow(StrictModel):
    """A workflow file."""

    scheduler: str | None = Field(None, description="Dask scheduler for every step that takes one.")
    steps: list[Step] = Field(min_length=1, description="The steps, run in order.")


@dataclass
class StepResult:
    """What happened to a step."""

    name: str
    skipped: bool
    seconds: float


def load_workflow(path: Path) -> Workflow:
    """Read and validate a workflow file (errors name the dotted key)."""
    workflow = build_config(Workflow, load_yaml(path), source=path)
    names = [step.name for step in workflow.steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        from pipeline.errors import ConfigError

        raise ConfigError(f"steps: duplicate step names: {', '.join(duplicates)}", path=path)
    return workflow


def command_line(step: Step, scheduler: str | None, accepts_scheduler: bool) -> list[str]:
    """The argument list of a step, as typed after ``terraseg``."""
    line = [step.command, *step.args]
    for key, value in step.options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            line.append(flag)
        elif value is False:
            line.append(f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            line += (
                [flag, *map(str, value)] if key == "pairs" else [flag, ",".join(map(str, value))]
            )
        elif value is not None:
            line += [flag, str(value)]
    if scheduler and accepts_scheduler and "scheduler" not in step.options:
        line += ["--scheduler", scheduler]
    return line


def stamp_of(step: Step, line: list[str], previous: str) -> str:
    """A hash of what a step does and reads, chained to the steps before it.

    Files named on the command line count with their size and modification time,
    except the step's own outputs (declared, or given with ``--out``).
    """
    made = {Path(p) for p in step.outputs}
    made |= {Path(str(v)) for k, v in step.options.items() if k == "out" and v is not None}
    inputs = []
    for token in line:
        path = Path(token)
        if path not in made and path.is_file():
            stat = path.stat()
            inputs.append([token, stat.st_size, stat.st_mtime_ns])
    text = json.dumps([line, step.outputs, inputs, previous])
    return hashlib.sha256(text.encode()).hexdigest()


@contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run the block with ``folder`` as the current directory."""
    before = Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run_workflow(
    workflow: Workflow,
    workdir: Path,
    execute: Callable[[list[str]], None],
    accepts_scheduler: Callable[[str], bool],
    *,
    only: list[str] | None = None,
) -> list[StepResult]:
    """Run the steps in order, skipping those whose outputs are current.

    Args:
        workflow: The validated workflow.
        workdir: Folder that relative paths resolve against.
        execute: Runs one command line (raises on failure).
        accepts_scheduler: Whether a command takes ``--scheduler``.
        only: Step names to run even when current (others run only when stale).
    """
    import time

    results = []
    previous = ""
    with working_directory(workdir):
        stamps = Path(STAMPS)
        stamps.mkdir(exist_ok=True)
        for step in workflow.steps:
            line = command_line(step, workflow.scheduler, accepts_scheduler(step.command))
            stamp = stamp_of(step, line, previous)
            stamp_file = stamps / f"{step.name}.json"
            current = (
                stamp_file.exists()
                and json.loads(stamp_file.read_text()).get("stamp") == stamp
                and all(Path(p).exists() for p in step.outputs)
            )
            if current and step.name not in (only or []):
                logger.info("step %s is current, skipped", step.name)
                results.append(StepResult(step.name, True, 0.0))
            else:
                stamp_file.unlink(missing_ok=True)
                logger.info("step %s: terraseg %s", step.name, " ".join(line))
                start = time.perf_counter()
                execute(line)
                seconds = time.perf_counter() - start
                write_json(stamp_file, {"stamp": stamp, "command": line, "seconds": seconds})
                results.append(StepResult(step.name, False, seconds))
            previous = stamp
    return results
