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
default). ``--set STEP.OPTION=VALUE`` changes a step's option for one run (the
value is read as YAML: ``1``, ``true``, ``null``, ``[a, b]``; ``STEP.args=[...]``
replaces the arguments).

After a step succeeds, a stamp in ``.terraseg-run/`` records a hash of its command
line (command, arguments, options: the step's settings), of every input file (the
files that each path, folder, glob pattern or ``.txt`` list on the command line
resolves to, with size and modification time; the step's own outputs and hidden
files left out) and of the stamps of the steps before it. A step whose outputs
exist and whose stamp matches is skipped; a raster added to an input folder makes
the step stale. Re-running an interrupted workflow resumes at the step that did not
finish, which itself resumes where it can: tiling and prediction skip finished
scenes and files, and a training step (a command that takes ``--resume``)
interrupted with the same stamp continues from its last checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.files import write_json
from terraseg.pipeline.settings import StrictModel, build_config, load_yaml

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
        raise ConfigError(f"steps: duplicate step names: {', '.join(duplicates)}", path=path)
    return workflow


def apply_overrides(workflow: Workflow, settings: Iterable[str]) -> Workflow:
    """The workflow with ``STEP.OPTION=VALUE`` settings applied (``--set`` of ``terraseg run``).

    Args:
        workflow: The validated workflow.
        settings: ``STEP.OPTION=VALUE`` strings; the value is read as YAML, so
            ``null`` removes an option. ``STEP.args=[a, b]`` replaces the
            arguments. An option matches the step's own spelling with dashes or
            underscores (``tile-size`` or ``tile_size``).

    Returns:
        A new workflow; ``workflow`` is unchanged.

    Raises:
        ConfigError: A setting is malformed or names no step.
    """
    steps = {step.name: step.model_dump() for step in workflow.steps}
    for setting in settings:
        target, sep, text = setting.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and key):
            raise ConfigError(f"--set {setting}: write STEP.OPTION=VALUE, e.g. train.epochs=1")
        if name not in steps:
            raise ConfigError(f"--set {setting}: no step {name!r}; steps: {', '.join(steps)}")
        value = yaml.safe_load(text) if text else None
        step = steps[name]
        if key == "args":
            values = value if isinstance(value, list) else [value]
            step["args"] = [str(item) for item in values if item is not None]
            continue
        options = step["options"]
        same = [k for k in options if k.replace("_", "-") == key.replace("_", "-")]
        for known in same:
            del options[known]
        options[same[0] if same else key] = value
    return Workflow(scheduler=workflow.scheduler, steps=[Step(**s) for s in steps.values()])


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

    Args:
        step: The step.
        line: Its command line (its settings).
        previous: The stamp of the step before it (``""`` for the first).

    Returns:
        The SHA-256 of the command line, the declared outputs, every input file
        (see :func:`input_files`) and ``previous``.
    """
    text = json.dumps([line, step.outputs, input_files(step, line), previous])
    return hashlib.sha256(text.encode()).hexdigest()


def outputs_of(step: Step) -> list[Path]:
    """What a step makes: its declared outputs and its ``--out``."""
    made = [Path(p) for p in step.outputs]
    out = step.options.get("out")
    return made + ([Path(str(out))] if out is not None else [])


def input_files(step: Step, line: list[str]) -> list[list[Any]]:
    """Every file a step's command line names, as ``[path, size, mtime_ns]``, sorted.

    Each token is taken as a path: a file (a ``.txt`` file also brings the paths it
    lists), a folder (every file beneath it), or a glob pattern (what it matches).
    Options, URIs, the step's own outputs and hidden files are left out.
    """
    made = [path.absolute() for path in outputs_of(step)]
    found: dict[str, list[Any]] = {}
    for token in line[1:]:
        for path in _files_of(token):
            absolute = path.absolute()
            if any(absolute == m or absolute.is_relative_to(m) for m in made):
                continue
            stat = path.stat()
            found[str(path)] = [str(path), stat.st_size, stat.st_mtime_ns]
    return [found[key] for key in sorted(found)]


def _files_of(token: str, depth: int = 0) -> list[Path]:
    """The files that one command-line token stands for (none for options and URIs)."""
    if token.startswith("-") or "://" in token or depth > 2:
        return []
    if glob.has_magic(token):
        matches = sorted(glob.glob(token, recursive=True))
        return [f for match in matches for f in _files_of(match, depth + 1)]
    path = Path(token)
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if not path.is_file():
        return []
    if path.suffix.lower() != ".txt":
        return [path]
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    listed = [ln for ln in lines if ln and not ln.startswith("#")]
    return [path, *(f for ln in listed for f in _files_of(ln, depth + 1))]


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
    accepts: Callable[[str, str], bool],
    *,
    only: list[str] | None = None,
) -> list[StepResult]:
    """Run the steps in order, skipping those whose outputs are current.

    A step runs again when its stamp changed (settings, input files, an earlier
    step) or it is in ``only``. A step that started with the same stamp and did
    not finish, and whose command takes ``--resume``, continues: from its last
    checkpoint when it wrote one, else from the start over what it left.

    Args:
        workflow: The validated workflow.
        workdir: Folder that relative paths resolve against.
        execute: Runs one command line (raises on failure).
        accepts: Whether a command (first argument) takes an option (second,
            the parameter name, e.g. ``scheduler``).
        only: Step names to run even when current (others run only when stale).

    Returns:
        What happened to each step, in order.
    """
    results = []
    previous = ""
    with working_directory(workdir):
        Path(STAMPS).mkdir(exist_ok=True)
        for step in workflow.steps:
            line = command_line(step, workflow.scheduler, accepts(step.command, "scheduler"))
            stamp = stamp_of(step, line, previous)
            record = _read_record(Path(STAMPS) / f"{step.name}.json")
            current = record.get("stamp") == stamp and all(Path(p).exists() for p in step.outputs)
            if current and step.name not in (only or []):
                logger.info("step %s is current, skipped", step.name)
                results.append(StepResult(step.name, True, 0.0))
            else:
                resume = record.get("started") == stamp and accepts(step.command, "resume")
                run_line = resumed_line(step, line) if resume else line
                result, stamp = _run_step(step, (line, run_line), (stamp, previous), execute)
                results.append(result)
            previous = stamp
    return results


def resumed_line(step: Step, line: list[str]) -> list[str]:
    """The command line that continues an interrupted training step with the same stamp.

    With a last checkpoint in the step's ``--out``: ``--resume`` (and no
    ``--overwrite``). Without one, what the interrupted step left holds nothing
    to continue from: it starts again with ``--overwrite``.
    """
    out = step.options.get("out")
    if out is None:
        return line
    if (Path(str(out)) / "checkpoints" / "last.pt").is_file():
        logger.info("step %s was interrupted: resuming from its last checkpoint", step.name)
        return [token for token in line if token != "--overwrite"] + ["--resume"]
    return line if "--overwrite" in line else [*line, "--overwrite"]


def _read_record(path: Path) -> dict[str, Any]:
    """A step's stamp file: ``{"stamp": ...}`` when it finished, ``{"started": ...}`` while not."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _run_step(
    step: Step,
    lines: tuple[list[str], list[str]],
    stamps: tuple[str, str],
    execute: Callable[[list[str]], None],
) -> tuple[StepResult, str]:
    """Run one step; its stamp file says ``started`` until it succeeds.

    Args:
        step: The step.
        lines: Its command line as the workflow gives it, and the one to run
            (with ``--resume`` when it continues an interrupted run).
        stamps: Its stamp before it runs, and the stamp of the step before it.
        execute: Runs one command line (raises on failure).

    Returns:
        What happened, and the step's stamp taken after it ran: the files it
        left in a folder it names (a folder it wrote into) count, so that an
        unchanged re-run finds the step current.
    """
    import time

    (line, run_line), (stamp, previous) = lines, stamps
    stamp_file = Path(STAMPS) / f"{step.name}.json"
    write_json(stamp_file, {"started": stamp, "command": run_line})
    logger.info("step %s: terraseg %s", step.name, " ".join(run_line))
    start = time.perf_counter()
    execute(run_line)
    seconds = time.perf_counter() - start
    done = stamp_of(step, line, previous)
    write_json(stamp_file, {"stamp": done, "command": run_line, "seconds": seconds})
    return StepResult(step.name, False, seconds), done
