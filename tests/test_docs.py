"""The project's Markdown: every relative link and anchor points at something that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(rf"{FENCE.pattern}|`[^`\n]*`", re.MULTILINE | re.DOTALL)  # and inline code


def anchors(document: Path) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces as
    -; a repeated heading's gets -1, -2, ..."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", FENCE.sub("", document.read_text()), re.MULTILINE)
    found: list[str] = []
    for heading in headings:
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        repeats = sum(1 for earlier in found if re.fullmatch(rf"{re.escape(slug)}(-\d+)?", earlier))
        found.append(f"{slug}-{repeats}" if repeats else slug)
    return set(found)


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in LINK.findall(CODE.sub("", document.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.is_relative_to(root):
            broken.append(f"{target} (outside the repository)")
        elif not linked.exists():
            broken.append(f"{target} (no {linked.relative_to(root)})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading for #{anchor})")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(document):
    assert broken_links(document) == []


def test_the_check_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# A heading, with punctuation\n## Notes\n## Notes\n")
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "[ok](../other.md#a-heading-with-punctuation) [gone](BENCHMARKS.md) "
        "[bad anchor](../other.md#nothing) [web](https://example.org) "
        "[second](../other.md#notes-1) [no third](../other.md#notes-2) [out](../../x.md)\n"
        "```\n[in code](nowhere.md)\n```\nand `[inline](nowhere.md)`\n"
    )
    found = [line.split(" ")[0] for line in broken_links(page, tmp_path)]
    assert found == ["BENCHMARKS.md", "../other.md#nothing", "../other.md#notes-2", "../../x.md"]
