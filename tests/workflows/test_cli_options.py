"""One meaning per option name: every terraseg command, read from the commands themselves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli


def _commands() -> Iterator[tuple[str, click.Command]]:
    """Every command (``terraseg registry show``, ...), as the CLI builds it."""
    ctx = click.Context(cli)

    def walk(group: click.Group, path: str) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                yield from walk(command, f"{path} {name}")
            else:
                yield f"{path} {name}", command

    yield from walk(cli, "terraseg")


def _kind(option: click.Option) -> str:
    """What an option's value is: a flag, a count, a path, a number, a choice or text."""
    if option.count:
        return "count"
    if option.is_flag:
        return "flag"
    match option.type:
        case click.Path():
            return "path"
        case click.Choice():
            return "choice"
        case click.IntRange() | click.types.IntParamType():
            return "integer"
        case click.FloatRange() | click.types.FloatParamType():
            return "number"
        case _:
            return "text"


def _options() -> list[tuple[str, str, click.Option]]:
    """(command, name, option) for every visible option name, short ones included."""
    found = []
    for path, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for name in [*param.opts, *param.secondary_opts]:
                    found.append((path, name, param))
    return found


def test_an_option_name_means_one_kind_of_value_in_every_command() -> None:
    kinds: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, name, option in _options():
        kinds[name][_kind(option)].append(path)
    mixed = {name: dict(by_kind) for name, by_kind in kinds.items() if len(by_kind) > 1}
    assert mixed == {}


def test_a_short_option_is_one_long_option_everywhere() -> None:
    longs: dict[str, set[str]] = defaultdict(set)
    for _, name, option in _options():
        if not name.startswith("--"):
            longs[name] |= {n for n in option.opts if n.startswith("--")}
    assert {short: names for short, names in longs.items() if len(names) != 1} == {}


def test_every_out_has_o_and_every_output_file_can_be_overwritten() -> None:
    without_o = [path for path, name, opt in _options() if name == "--out" and "-o" not in opt.opts]
    assert without_o == []
    overwritable = {path for path, name, _ in _options() if name == "--overwrite"}
    writers = {"terraseg tile", "terraseg train", "terraseg predict", "terraseg vectorize",
               "terraseg evaluate"}  # fmt: skip
    assert writers <= overwritable


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["model", "describe", "--classes", "5"], "--num-classes"),
        (["model", "describe", "--bands", "4"], "--num-bands"),
        (["synth", "OUT", "--labels", "raster"], "--label-format"),
        (["synth", "OUT", "--nodata", "border"], "--nodata-areas"),
        (["bench", "predict", "--size", "256"], "--scene-size"),
    ],
)
def test_a_former_spelling_is_refused_naming_the_new_one(
    args: list[str], hint: str, tmp_path: Path
) -> None:
    args = [str(tmp_path / "out") if arg == "OUT" else arg for arg in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert hint in line


def test_evaluate_refuses_to_replace_its_output_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    out.write_text("{}")
    result = CliRunner().invoke(cli, ["evaluate", "x.tif", "--truth", "y.gpkg", "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out}: output exists; pass --overwrite to replace it\n"
    assert out.read_text() == "{}"
