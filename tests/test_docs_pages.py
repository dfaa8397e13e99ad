"""docs/lowlevel.md, docs/testing.md and docs/architecture.md: their
examples run, their links resolve, and what the map of the code names
is there.

As in api.md (tests/test_docs_api.py), every fenced ``python`` block must
compile; one right after a ``<!-- run -->`` line is a whole program that
runs in a fresh interpreter, exits cleanly without writing to stderr and,
if an ``<!-- output -->`` ``text`` block follows, prints exactly that.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs_api import _anchors
from test_layers import LAYERS

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["lowlevel.md", "testing.md", "architecture.md", "control.md", "names.md", "diskd.md"]
RUN_TIMEOUT = 60

_FENCE = re.compile(r"^(<!--[^\n]*-->\n)?```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks(name: str) -> list[tuple[int, str | None, str, str]]:
    """(line, marker, language, code) of every fenced block of docs/<name>."""
    text = (ROOT / "docs" / name).read_text()
    return [
        (
            text.count("\n", 0, m.start(2)) + 1,
            m.group(1).strip() if m.group(1) else None,
            m.group(2),
            m.group(3),
        )
        for m in _FENCE.finditer(text)
    ]


def python_blocks() -> list[tuple[str, int, str | None, str, str | None]]:
    """(page, line, marker, code, expected output) of every python block."""
    out = []
    for name in PAGES:
        found = blocks(name)
        for i, (line, marker, lang, code) in enumerate(found):
            if lang != "python":
                continue
            expected = None
            if i + 1 < len(found) and found[i + 1][1] == "<!-- output -->":
                expected = found[i + 1][3]
            out.append((name, line, marker, code, expected))
    return out


PYTHON = python_blocks()
RUN = [b for b in PYTHON if b[2] == "<!-- run -->"]


def test_the_pages_have_examples_to_run() -> None:
    assert {b[0] for b in RUN} == {"lowlevel.md", "testing.md", "control.md", "names.md"}
    markers = {m for name in PAGES for _, m, _, _ in blocks(name) if m}
    assert markers <= {"<!-- run -->", "<!-- output -->"}, markers


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: f"{b[0]}:{b[1]}")
def test_python_examples_compile(block: tuple[str, int, str | None, str, str | None]) -> None:
    compile(block[3], f"{block[0]}:{block[1]}", "exec")


@pytest.mark.parametrize("block", RUN, ids=lambda b: f"{b[0]}:{b[1]}")
def test_runnable_examples_run(block: tuple[str, int, str | None, str, str | None]) -> None:
    name, line, _, code, expected = block
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT
    )
    assert result.returncode == 0, f"{name}:{line} failed:\n{result.stderr}"
    assert result.stderr == "", f"{name}:{line} wrote to stderr:\n{result.stderr}"
    if expected is not None:
        assert result.stdout == expected, f"{name}:{line}: output differs"


@pytest.mark.parametrize("name", PAGES)
def test_links_resolve(name: str) -> None:
    page = ROOT / "docs" / name
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if "://" in link:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target) if target else page
        assert path.exists(), f"{name}: link to a missing file {link!r}"
        if anchor:
            assert anchor in _anchors(path), f"{name}: no heading for {link!r}"


@pytest.mark.parametrize("name", PAGES)
def test_the_files_named_exist(name: str) -> None:
    """Every `path/like/this.py` or `tests/test_x.py` the page names is there."""
    text = (ROOT / "docs" / name).read_text()
    missing = []
    for path in sorted(set(re.findall(r"`((?:aemp/|tests/|[\w]+/)?[\w/*]+\.py)`", text))):
        top = ("aemp/", "tests/", "bench/", "eg/")
        where = path if path.startswith(top) else f"aemp/{path}"
        if not list(ROOT.glob(where)):
            missing.append(path)
    assert not missing, f"{name} names files that are not there: {missing}"


def test_the_map_lists_the_layers_the_layering_test_checks() -> None:
    """The layer table of architecture.md and tests/test_layers.py agree."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d)\. [^|]+\| ([^|]+) \|", text, re.M)
    assert [int(n) for n, _ in rows] == list(range(len(LAYERS)))
    for (n, cell), layer in zip(rows, LAYERS, strict=True):
        named = {m.rstrip("/").replace("_cli*", "_cli") for m in re.findall(r"`([\w/*]+)`", cell)}
        assert named == layer, f"layer {n}: the page says {sorted(named)}, the test {sorted(layer)}"
