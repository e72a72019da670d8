"""The layout holds: layers, no import cycles, one hop per stage, short functions.

Read from the source's syntax trees, so the rules hold for every module, including
the ones no test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "workflows")
STAGES = {"tile": "tiling", "train": "training", "predict": "prediction", "vectorize": "vectorize"}
MAX_FUNCTION_LINES = 60  # lines of code: the docstring does not count


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[f"terraseg.{name}"] = path
    return found


MODULES = modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules of the two packages that ``path`` imports (resolved to existing modules)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
                names.add(node.module)
            elif isinstance(node, ast.If) and _type_checking(node):
                continue
            elif not top_level_only or isinstance(node, ast.If | ast.Try | ast.With):
                visit(
                    [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
                )

    visit(tree.body)
    return {n for n in names if n in MODULES}


def test_the_library_never_imports_orchestration():
    offenders = {
        name: sorted(
            n for n in imported(path, top_level_only=False) if n.startswith("terraseg.workflows")
        )
        for name, path in MODULES.items()
        if name.startswith("terraseg.pipeline")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    graph = {name: imported(path, top_level_only=True) - {name} for name, path in MODULES.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


@pytest.mark.parametrize(("command", "package"), STAGES.items())
def test_each_stage_is_one_hop_from_its_api_function_to_its_package(command, package):
    """``terraseg X`` calls ``terraseg.workflows.api.X``, which drives ``pipeline/X/``."""
    assert (ROOT / "pipeline" / package / "__init__.py").is_file()
    used = imported(ROOT / "workflows" / "cli" / f"{command}.py", top_level_only=False)
    assert f"terraseg.workflows.api.{command}" in used, used
    used = imported(ROOT / "workflows" / "api" / f"{command}.py", top_level_only=False)
    assert any(name.split(".")[:3] == ["terraseg", "pipeline", package] for name in used), used


def test_the_packages_are_imported_only_as_terraseg():
    """The wheel installs ``terraseg`` alone; a bare ``import pipeline`` would work only here."""
    offenders = []
    for path in [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert offenders == []


def test_the_tree_maps_both_folders_under_terraseg():
    for package in PACKAGES:
        assert (ROOT / "terraseg" / package).resolve() == (ROOT / package).resolve()


def function_lengths() -> list[tuple[str, int]]:
    lengths = []
    for name, path in MODULES.items():
        if name.startswith("terraseg.workflows.bench"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    assert first.end_lineno is not None  # the docstring is not code
                    lines -= first.end_lineno - first.lineno + 1
                lengths.append((f"{name}.{node.name}", lines))
    return lengths


def test_no_function_is_longer_than_60_lines():
    lengths = function_lengths()
    assert len(lengths) > 500  # the walk does see the code
    assert [(f, n) for f, n in lengths if n > MAX_FUNCTION_LINES] == []


def test_every_choice_list_has_one_source():
    """Registries are keyed by exactly the names their config ``Literal`` declares, and the
    CLI offers exactly those (the CLI reads them from the config models)."""
    from typing import get_args

    from click.testing import CliRunner

    from terraseg.pipeline.model.backbones import BACKBONES
    from terraseg.pipeline.model.config import BackboneName
    from terraseg.pipeline.prediction.blending import BLEND_WINDOWS, WindowName
    from terraseg.pipeline.prediction.config import PredictConfig
    from terraseg.workflows.cli.main import cli

    assert list(BLEND_WINDOWS) == list(get_args(WindowName))
    assert set(BACKBONES) == set(get_args(BackboneName))
    usage = CliRunner().invoke(cli, ["predict", "--help"]).output
    for name in ("window", "tta", "device", "precision"):
        values = get_args(PredictConfig.model_fields[name].annotation)
        assert f"[{'|'.join(values)}]" in usage.replace("\n", "").replace(" ", "")
