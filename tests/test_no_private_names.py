"""The tests use the API, aemp.lowlevel and aemp.testing, not private names.

A test that reaches into a node's private state (``node._ports``,
``node._remotes``, ``conn._receive``...) breaks whenever the kernel or the
network is reorganised, and tests what the code happens to hold rather
than what it promises. What a test must see or break goes through
``aemp.lowlevel`` (statistics, port_info, node_info...) or the hooks of
``aemp.testing`` (connection, cut_link, network, take_names...).

This walks the syntax tree of every test module and fails on an attribute
access to a name with one leading underscore on anything but ``self`` or
``cls``. Importing a private module to unit-test what it offers (``from
aemp._config import Config``) is no attribute access, and stays allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Modules left out, and why.
EXEMPT = {
    # the sans-IO core's own tests: they drive aemp.wire directly, and may
    # look at its internals (framing state, encoders)
    "test_wire_connection.py": "wire",
    "test_wire_framing.py": "wire",
    "test_wire_imports.py": "wire",
    "test_wire_vectors.py": "wire",
}

# Attribute accesses allowed anyway: "module.path:expression", each with why.
# Keep it short: a new entry needs a reason no public name can serve.
ALLOWED: dict[str, str] = {
    # a global that never sends its view to a new global: the fault is
    # injected into the global service, which no public interface can make
    # misbehave (a test of the wait that follows)
    "test_db_review:g2._db": "fault injection",
    "test_db_review:g2._db.glob.meet": "fault injection",
}


def private_uses(path: Path) -> list[str]:
    """'line: expression' for each attribute access to a private name in path."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        expr = ast.unparse(node)
        if f"{path.stem}:{expr}" in ALLOWED:
            continue
        found.append(f"{node.lineno}: {expr}")
    return found


def checked_modules() -> list[Path]:
    return sorted(p for p in TESTS.glob("*.py") if p.name not in EXEMPT)


def test_the_exempt_modules_exist() -> None:
    """An exemption for a module that is gone would hide nothing, and mislead."""
    missing = sorted(name for name in EXEMPT if not (TESTS / name).exists())
    assert not missing, f"exempt but not there: {missing}"
    every = {p.name for p in TESTS.glob("test_db*.py")} | {
        p.name for p in TESTS.glob("test_wire_*.py")
    }
    assert set(EXEMPT) <= every


@pytest.mark.parametrize("path", checked_modules(), ids=lambda p: p.name)
def test_no_private_names(path: Path) -> None:
    uses = private_uses(path)
    assert not uses, (
        f"{path.name} reaches into private names; use the API, aemp.lowlevel or "
        f"aemp.testing instead (docs/lowlevel.md, docs/testing.md): {uses}"
    )


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "node._ports\n"
        "node.port_info(p)._x\n"
        "self._ok\n"
        "cls._ok\n"
        "obj.__class__\n"
        "from aemp._config import Config\n"
        "import aemp.kernel._remote\n"
        "aemp._config\n"
    )
    assert private_uses(sample) == ["1: node._ports", "2: node.port_info(p)._x", "8: aemp._config"]
