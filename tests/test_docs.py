"""The documentation: the generated configuration reference is current, links resolve."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MAX_TABLE_ROW = 120  # characters; longer rows belong in lists or prose


def test_configuration_reference_is_current() -> None:
    from terraseg.workflows.config_reference import render

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "run: make docs (python -m terraseg.workflows.config_reference)"


def _prose(path: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", path.read_text())


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found: set[str] = set()
    for title in HEADING.findall(_prose(path)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(page: Path) -> None:
    broken = []
    for target in _links(page):
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in _links(index)}
    unlinked = [p.name for p in PAGES[1:] if p != index and p.resolve() not in linked]
    assert not unlinked, f"docs/README.md does not link {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_table_rows_are_short(page: Path) -> None:
    rows = [line for line in _prose(page).splitlines() if line.startswith("|")]
    long = [row[:60] + "..." for row in rows if len(row) > MAX_TABLE_ROW]
    assert not long, f"table rows over {MAX_TABLE_ROW} characters: {long}"


def test_anchors_follow_github_rules(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Sample data: `terraseg synth`\n\n## Notes\n\n## Notes\n\n```\n# not\n```\n")
    assert _anchors(page) == {"sample-data-terraseg-synth", "notes", "notes-1"}


def test_links_skip_urls_and_images(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md#title) [web](https://example.org) ![img](x.png)\n# Title\n")
    assert _links(page) == ["page.md#title"]


def test_every_test_the_docs_name_exists() -> None:
    """A guarantee that names its test names one that runs."""
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    defined = set(re.findall(r"^\s*def (test_\w+)", sources, re.MULTILINE))
    named = {name for page in PAGES for name in re.findall(r"`(test_\w+)`", page.read_text())}
    assert len(named) > 30
    assert sorted(named - defined) == []
