"""docs/api.md documents exactly the public API, and its examples run.

The page is read as sections: a level-3 heading that starts with a name
in backticks (``### `snd(port, *msg)` ``) documents that name of the
current module, which is ``aemp`` unless a ``## Module `aemp.x` ``
heading switched to another; a level-4 heading ``#### `Class.member` ``
documents a member of a class documented there. So a new public name
(``db_set``, a module ``aemp.testing``) needs nothing here: the test fails
until the page has a section for it, and passes once it has.

Every fenced ``python`` block must compile. A block right after a
``<!-- run -->`` line is a whole program: it runs in a fresh interpreter,
must exit cleanly without writing to stderr, and if an ``<!-- output -->``
``text`` block follows it, must print exactly that.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

import aemp

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
# public modules documented on another page instead, with where
DOCUMENTED_ELSEWHERE = {
    "aemp.wire": ROOT / "docs" / "protocol.md",
    "aemp.lowlevel": ROOT / "docs" / "lowlevel.md",  # checked by test_lowlevel.py
    "aemp.kernel": ROOT / "docs" / "lowlevel.md",
    "aemp.net": ROOT / "docs" / "protocol.md",
    "aemp.testing": ROOT / "docs" / "testing.md",
    "aemp.control": ROOT / "docs" / "control.md",
    "aemp.metrics": ROOT / "docs" / "control.md",
}
RUN_TIMEOUT = 60

_NAME = re.compile(r"^### `(?:aemp\.)?([A-Za-z_]\w*)")
_MEMBER = re.compile(r"^#### `([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_MODULE = re.compile(r"^## Module `(aemp(?:\.\w+)+)`")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # the <!-- ... --> comment on the line before the fence


@dataclass
class Page:
    names: dict[str, list[str]] = field(default_factory=dict)  # module -> documented names
    members: list[tuple[str, str, str, int]] = field(default_factory=list)  # module, cls, attr
    blocks: list[Block] = field(default_factory=list)


def read_page() -> Page:
    page = Page(names={"aemp": []})
    module = "aemp"
    lines = DOC.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            start, lang = i, line[3:].strip()
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            assert i < len(lines), f"api.md:{start + 1}: unclosed code block"
            before = lines[start - 1].strip() if start else ""
            marker = before if before.startswith("<!--") else None
            page.blocks.append(Block(start + 1, lang, "\n".join(lines[start + 1 : i]), marker))
        elif line.startswith("## "):
            m = _MODULE.match(line)
            module = m.group(1) if m else "aemp"
            page.names.setdefault(module, [])
        elif m := _NAME.match(line):
            page.names[module].append(m.group(1))
        elif m := _MEMBER.match(line):
            page.members.append((module, m.group(1), m.group(2), i + 1))
        i += 1
    return page


PAGE = read_page()


def public_names(module: ModuleType) -> set[str]:
    """__all__, or else the functions and classes the module defines."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    }


def public_modules() -> list[str]:
    return sorted(
        f"aemp.{info.name}"
        for info in pkgutil.iter_modules(aemp.__path__)
        if not info.name.startswith("_")
    )


# -- the names ---------------------------------------------------------------


def test_the_page_has_sections() -> None:
    assert len(PAGE.names["aemp"]) >= 30, PAGE.names


@pytest.mark.parametrize("module_name", sorted(PAGE.names))
def test_documented_names_are_exactly_the_public_ones(module_name: str) -> None:
    module = importlib.import_module(module_name)
    documented = PAGE.names[module_name]
    twice = sorted({n for n in documented if documented.count(n) > 1})
    assert not twice, f"{module_name}: documented more than once in api.md: {twice}"
    public = public_names(module)
    missing = sorted(public - set(documented))
    gone = sorted(set(documented) - public)
    assert not missing, f"{module_name}: public but without a section in api.md: {missing}"
    assert not gone, f"{module_name}: documented in api.md but not public: {gone}"


@pytest.mark.parametrize("module_name", public_modules())
def test_every_public_module_is_documented(module_name: str) -> None:
    if module_name in DOCUMENTED_ELSEWHERE:
        other = DOCUMENTED_ELSEWHERE[module_name]
        assert module_name in other.read_text(), f"{other.name} does not mention {module_name}"
        assert module_name in DOC.read_text(), f"api.md should point to {other.name}"
        return
    assert module_name in PAGE.names, f"api.md has no '## Module `{module_name}`' section"


def test_documented_members_exist() -> None:
    assert PAGE.members
    for module_name, cls_name, attr, line in PAGE.members:
        assert cls_name in PAGE.names[module_name], (
            f"api.md:{line}: {cls_name}.{attr} is under {module_name}, "
            f"which has no section for {cls_name}"
        )
        cls = getattr(importlib.import_module(module_name), cls_name)
        assert hasattr(cls, attr), f"api.md:{line}: {module_name}.{cls_name} has no {attr!r}"


# -- the examples --------------------------------------------------------------


PYTHON = [b for b in PAGE.blocks if b.lang == "python"]
RUN = [b for b in PYTHON if b.marker == "<!-- run -->"]


def _output_after(block: Block) -> str | None:
    """The <!-- output --> block that follows a run block, if any."""
    i = PAGE.blocks.index(block)
    if i + 1 < len(PAGE.blocks):
        nxt = PAGE.blocks[i + 1]
        if nxt.marker == "<!-- output -->" and nxt.lang == "text":
            return nxt.code + "\n"
    return None


def test_there_are_examples_to_run() -> None:
    assert len(RUN) >= 4
    markers = {b.marker for b in PAGE.blocks if b.marker}
    assert markers <= {"<!-- run -->", "<!-- output -->"}, f"unknown markers: {markers}"


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: f"line{b.line}")
def test_python_examples_compile(block: Block) -> None:
    compile(block.code, f"api.md:{block.line}", "exec")


@pytest.mark.parametrize("block", RUN, ids=lambda b: f"line{b.line}")
def test_runnable_examples_run(block: Block) -> None:
    result = subprocess.run(
        [sys.executable, "-c", block.code],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"api.md:{block.line} failed:\n{result.stderr}"
    assert result.stderr == "", f"api.md:{block.line} wrote to stderr:\n{result.stderr}"
    expected = _output_after(block)
    if expected is not None:
        assert result.stdout == expected, f"api.md:{block.line}: output differs"


# -- links between the pages ---------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("name", ["README.md", "api.md", "protocol.md"])
def test_links_between_doc_pages_resolve(name: str) -> None:
    page = ROOT / "docs" / name
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    local = [link for link in links if "://" not in link]
    assert local or name == "protocol.md"
    for link in local:
        target, _, anchor = link.partition("#")
        path = (page.parent / target) if target else page
        assert path.exists(), f"{name}: link to a missing file {link!r}"
        if anchor:
            assert anchor in _anchors(path), f"{name}: no heading for {link!r}"
