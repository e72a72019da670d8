"""The documentation: the generated configuration reference is current."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    from workflows.config_reference import render

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "run: make docs (python -m workflows.config_reference)"
