"""Every relative link in the project's Markdown (README.md, MODEL_CARD.md, docs/**/*.md) resolves.

A link's file must exist; a link's ``#anchor`` must be a heading of the target file, slugged as GitHub
does (lower case; punctuation other than ``-`` and ``_`` dropped; spaces become ``-``; repeated
headings get ``-1``, ``-2``, ...). Links inside code spans and fenced code blocks are not links.
"""

import re
import unicodedata

import pytest

from conftest import ROOT

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")


def markdown_files():
    return [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text):
    """The lines outside fenced code blocks, with code spans removed."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            inside = not inside
            continue
        if not inside:
            yield CODE_SPAN.sub("", line)


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    kept = [c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LM" or unicodedata.category(c) == "Nd"]
    return "".join(kept).replace(" ", "-")


def anchors(path):
    """Every anchor GitHub gives the headings of a Markdown file."""
    seen, result = {}, set()
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            inside = not inside
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if inside or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path):
    """(link, reason) for each relative link of `path` that does not resolve."""
    problems = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                problems.append((target, "no such file"))
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append((target, "no such heading"))
    return problems


def test_slug_matches_github():
    """Anchors GitHub generated for headings of this repository's earlier documents."""
    assert slug("Reconstruction speed (image → mesh at 128³)") == "reconstruction-speed-image--mesh-at-128"
    assert slug("Benchmark (`python tools/benchmark.py data`)") == "benchmark-python-toolsbenchmarkpy-data"
    assert slug("The interior of bulky shapes: a fourth stage") == "the-interior-of-bulky-shapes-a-fourth-stage"
    assert slug("Weighting the inside samples, as DISN does") == "weighting-the-inside-samples-as-disn-does"


def test_checker_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [ok](other.md#twice-1) [ok](#local) ![ok](other.md)\n"
        "[missing file](nothere.md) [missing anchor](other.md#twice-2) [web](https://example.com/x)\n"
        "`[code](nothere.md)`\n```\n[fenced](nothere.md)\n```\n# Local\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [("nothere.md", "no such file"), ("other.md#twice-2", "no such heading")]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []
