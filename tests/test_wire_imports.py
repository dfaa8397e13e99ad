"""The wire core is sans-IO: nothing in aemp/wire imports asyncio or socket."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import aemp.wire

WIRE_DIR = Path(aemp.wire.__file__).parent
FORBIDDEN = {"asyncio", "socket"}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_wire_sources_do_not_import_io_modules() -> None:
    sources = sorted(WIRE_DIR.glob("*.py"))
    assert len(sources) >= 5
    for path in sources:
        top_level = {name.split(".")[0] for name in _imported_modules(path)}
        assert not top_level & FORBIDDEN, f"{path.name} imports {top_level & FORBIDDEN}"


def test_ast_check_would_catch_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom asyncio import sleep\nimport socket as s\n")
    assert {"asyncio", "socket"} <= _imported_modules(bad)


# aemp/__init__.py (the node API) may well use asyncio; the check is about the
# wire package and what it pulls in, so the parent package is a bare stub here.
_PROBE = """
import json, sys, types
pkg = types.ModuleType("aemp")
pkg.__path__ = [sys.argv[1]]
sys.modules["aemp"] = pkg
import aemp.wire
before = sorted(m for m in ("asyncio", "socket", "ssl") if m in sys.modules)
s = aemp.wire.Settings("n", "aemp-py-test", secret="x")
c = aemp.wire.Connection(s, peeraddr="127.0.0.1:1")
c.start()
c.receive_data(c.data_to_send().replace(b"aemp;1;n;", b"aemp;1;m;"))
c.next_event()
after = sorted(m for m in ("asyncio", "socket", "ssl") if m in sys.modules)
print(json.dumps([before, after]))
"""


def test_importing_and_using_wire_loads_no_io_module() -> None:
    aemp_dir = str(WIRE_DIR.parent)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, aemp_dir], capture_output=True, text=True, check=True
    ).stdout
    before, after = json.loads(out)
    assert before == [], f"importing aemp.wire loaded {before}"
    assert after == [], f"a plain (non-TLS) handshake loaded {after}"
