"""The database as a layer: its imports go one way, it lists each g_* tag
once, and its table of global-node requests is open."""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aemp
from aemp import lowlevel
from aemp.db import _client, _service

SECRET = "db-layer-secret"
DB = Path(_client.__file__).parent

# what each module of aemp/db may import from aemp: the leaves, and the db
# modules before it (the client creates the service, never the other way)
ALLOWED = {
    "_names": {"_errors"},
    "_host": set(),
    "_merge": set(),
    "_service": {"_errors", "db._host", "db._merge", "db._names"},
    "_client": {
        "_errors",
        "_ids",
        "_message",
        "_pending",
        "_runtime",
        "kernel",
        "db._host",
        "db._names",
        "db._service",
    },
    "__init__": set(),
}


def _imports(path: Path) -> set[str]:
    """The aemp modules `path` imports, type-only and function-level ones too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = "" if node.level == 2 else "db."
            mod = base + (node.module or "")
            out |= {mod} if node.module else {base + a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]  # fmt: skip
            out |= {n.removeprefix("aemp.") for n in names if n and n.startswith("aemp")}
    return out


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_the_db_imports_go_one_way(name: str) -> None:
    got = _imports(DB / f"{name}.py")
    assert got <= ALLOWED[name], f"aemp/db/{name}.py imports {sorted(got - ALLOWED[name])}"


def test_the_db_touches_no_private_name_of_the_node() -> None:
    for path in DB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                inner = node.value.attr
                assert not (inner in ("host", "node") and node.attr.startswith("_")), (
                    f"{path.name}:{node.lineno}: {inner}.{node.attr}"
                )
            if isinstance(node, ast.Name):
                assert node.id != "Node", f"{path.name}:{node.lineno} names Node"


async def test_each_g_tag_is_listed_once_and_registered() -> None:
    answers, requests = set(_client.ANSWERS), set(_service.REQUESTS)
    assert not answers & requests
    every = answers | requests
    assert all(t.startswith("g_") for t in every)
    assert len(every) == 15  # g_db_families (aemp's own, issue 17) is the 15th
    # a node registers them all with the node's request registry
    async with aemp.Node(nodeid="solo") as node:
        assert all(node.handles(t) for t in every)
        assert not node.handles("g_no_such_request")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(  # noqa: SIM117
        nodeid="g", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2
    ) as g:
        async with aemp.Node(nodeid="n", seeds=g.listeners, secret=SECRET, monitor_timeout=2) as n:
            async with asyncio.timeout(5):
                while n.master != "g":
                    await asyncio.sleep(0.01)
            yield g, n


async def test_a_capability_adds_a_global_node_request(
    pair: tuple[aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    g, n = pair
    got: list[tuple[Any, ...]] = []
    done = asyncio.Event()

    def lease(src: str, *args: Any) -> None:
        got.append((src, *args))
        lowlevel.request(g, src, "g_reply", "no-such-query", [])  # answers go where they may
        done.set()

    for node in (g, n):
        lowlevel.handle_global(node, "g_test_lease", lease)
    with pytest.raises(ValueError, match="already"):
        lowlevel.handle_global(g, "g_test_lease", lease)
    with pytest.raises(ValueError, match="already"):
        lowlevel.handle_global(g, "g_upd", lease)
    with pytest.raises(ValueError, match="already"):
        lowlevel.handle_global(g, "g_found", lease)

    n.snd("g", "g_test_lease", "svc", 1)
    async with asyncio.timeout(5):
        await done.wait()
    assert got == [("n", "svc", 1)]

    # not global: the request is refused; from its own code: refused too
    caplog.set_level(logging.WARNING, logger="aemp.node")
    g.snd("n", "g_test_lease", "svc", 2)
    g.snd("g", "g_test_lease", "svc", 3)
    got_can: list[Any] = []
    can = asyncio.Event()
    reply = n.port(lambda ok: (got_can.append(ok), can.set()))
    n.snd("g", "can", "g_test_lease", reply)
    async with asyncio.timeout(5):
        await can.wait()
        while len([r for r in caplog.records if "g_test_lease" in r.getMessage()]) < 2:
            await asyncio.sleep(0.01)
    assert got_can == [True]
    assert got == [("n", "svc", 1)]
    why = " ".join(r.getMessage() for r in caplog.records)
    assert "is for global nodes" in why and "own node port" in why
