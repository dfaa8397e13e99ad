# The aemp command's look at a running network: nodes, db and trace.
#
# Each runs on the short-lived anonymous node of _cli_net and asks the
# global nodes (its master, one of the seeds), which hold the merged
# database: `'l` maps every node that listens to its addresses and `'g`
# names the global nodes. `db --watch` follows a family with db_mon until a
# signal or an explicit --timeout ends it. `trace` walks the connection
# graph breadth first with the up_nodes node request, asking each node that
# listens which nodes it is connected to; a node that listens nowhere (a
# client, another aemp command) cannot be dialled and shows as a leaf. The
# walk asks at most --max nodes, each bounded by the timeout.

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from ._cli_base import Command, Session, Usage, need_str, to_json
from ._cli_local import talk as _talk  # through a local node's control socket, if one runs
from ._cli_net import DEFAULT_TIMEOUT, G_NET
from ._errors import AempError, CallTimeout, DbTimeout, PortDead
from .db._names import check_family

GLOBALS = "the global nodes"
MAX_NODES = 100


async def _network(node: Any, limit: float) -> tuple[dict[str, list[str]], set[str]]:
    """Where each node listens ('l) and which nodes are global ('g), from the master."""
    listeners, globals_ = await asyncio.gather(
        node.db_family("'l", timeout=limit), node.db_keys("'g", timeout=limit)
    )
    addrs = {
        n: [a for a in v if isinstance(a, str)] if isinstance(v, list) else []
        for n, v in listeners.items()
    }
    return addrs, {g for g in globals_ if isinstance(g, str)}


# ---------------------------------------------------------------- nodes


def _nodes(s: Session, args: list[Any]) -> int:
    as_json = bool(s.options.get("--json"))

    async def work(node: Any, limit: float) -> int:
        addrs, globals_ = await _network(node, limit)
        ids = sorted(set(addrs) | globals_)
        if as_json:
            table = {n: {"global": n in globals_, "listeners": addrs.get(n, [])} for n in ids}
            print(to_json(table, indent=2), flush=True)
            return 0
        width = max((len(n) for n in ids), default=0)
        for n in ids:
            role = "global" if n in globals_ else "node"
            print(f"{n:<{width}}  {role:<6}  {','.join(addrs.get(n, [])) or '-'}", flush=True)
        return 0

    return _talk(s, "nodes", GLOBALS, work)


# ---------------------------------------------------------------- db


def _family(cmd: str, arg: Any) -> str:
    family = need_str(cmd, "FAMILY", arg)
    try:
        return check_family(family, write=False)
    except AempError as e:
        raise Usage(f"{cmd}: {e}") from None


def _sorted(d: Any) -> dict[str, Any]:
    return {k: d[k] for k in sorted(d)}


def _db(s: Session, args: list[Any]) -> int:
    if not args:
        if s.options.get("--watch"):
            raise Usage("db: --watch needs a FAMILY: expected 'aemp db FAMILY --watch'")
        return _families(s)
    family = _family("db", args[0])
    if s.options.get("--watch"):
        return _watch(s, family)

    async def work(node: Any, limit: float) -> int:
        data = await node.db_family(family, timeout=limit)
        print(to_json(_sorted(data), indent=2), flush=True)
        return 0

    return _talk(s, "db", GLOBALS, work)


def _families(s: Session) -> int:
    async def work(node: Any, limit: float) -> int:
        counts = await node.db_families(timeout=limit)
        print(to_json(_sorted(counts), indent=2), flush=True)
        return 0

    return _talk(s, "db", GLOBALS, work)


def _watch(s: Session, family: str) -> int:
    total = s.timeout  # only an explicit --timeout ends the watch

    async def work(node: Any, limit: float) -> int:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def changed(view: Any, added: Any, changed: Any, deleted: Any) -> None:
            events.put_nowait(
                {
                    "added": sorted(added),
                    "changed": sorted(changed),
                    "deleted": sorted(deleted),
                    "view": _sorted(view),
                }
            )

        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, events.put_nowait, None)
        try:
            node.db_mon(family, changed)
            try:
                first = await asyncio.wait_for(events.get(), limit)
            except TimeoutError:
                where = f"master {node.master}" if node.master else "no master reachable"
                raise DbTimeout(f"db_mon({family!r})", limit, where) from None
            # a timeout ends the watch normally: it lasted as long as asked
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(total):
                    event = first
                    while event is not None:
                        print(to_json(event), flush=True)
                        event = await events.get()
            return 0
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    return _talk(s, "db", GLOBALS, work)


# ---------------------------------------------------------------- trace


class _Walk:
    """What a trace found: who is connected to whom, and who did not answer."""

    def __init__(self, start: str) -> None:
        self.order = [start]  # every node seen, in the order found
        self.peers: dict[str, list[str]] = {}  # the nodes that answered
        self.problems: dict[str, str] = {}  # the nodes asked that did not
        self.leaves: set[str] = set()  # not asked: they listen nowhere
        self.globals: set[str] = set()
        self.cut = False  # more nodes than --max

    def edges(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        seen: set[frozenset[str]] = set()
        for n in self.order:
            for p in self.peers.get(n, ()):
                if frozenset((n, p)) not in seen:
                    seen.add(frozenset((n, p)))
                    out.append((n, p))
        return out


async def _ask(node: Any, nodeid: str, limit: float) -> list[str] | str:
    """The nodes `nodeid` is connected to, or what went wrong."""
    try:
        reply = await node.cal(nodeid, "up_nodes", timeout=limit)
    except CallTimeout:
        return f"no answer within {limit:g} s (a node that does not know 'up_nodes' keeps quiet)"
    except PortDead as e:
        r = e.reason
        if r[:1] == ("transport_error",) and len(r) >= 3:
            return f"cannot reach it: {r[2]}"
        return f"its node port died: {to_json(list(r))}"
    up = reply[0] if len(reply) == 1 else None
    if not isinstance(up, list) or not all(isinstance(n, str) for n in up):
        return f"answered {to_json(list(reply))[:80]} instead of a list of node IDs"
    return up


async def _walk(node: Any, start: str, limit: float, most: int) -> _Walk:
    addrs, globals_ = await _network(node, limit)
    w = _Walk(start)
    w.globals = globals_
    seen = {start}
    frontier = [start]
    while frontier:
        answers = await asyncio.gather(*(_ask(node, n, limit) for n in frontier))
        nxt: list[str] = []
        for n, up in zip(frontier, answers, strict=True):
            if isinstance(up, str):
                w.problems[n] = up
                continue
            w.peers[n] = sorted(p for p in set(up) if p not in (node.id, n))
            for p in w.peers[n]:
                if p in seen:
                    continue
                if len(seen) >= most:
                    w.cut = True
                    continue
                seen.add(p)
                w.order.append(p)
                if addrs.get(p):
                    nxt.append(p)
                else:
                    w.leaves.add(p)
        frontier = nxt
    return w


def _dot(w: _Walk) -> str:
    def q(n: str) -> str:
        return '"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["graph aemp {"]
    for n in w.order:
        attrs = []
        if n in w.globals:
            attrs.append("shape=box")
        if n in w.leaves:
            attrs.append("style=dashed")
        if n in w.problems:
            attrs.append("color=red")
        lines.append(f"  {q(n)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines += [f"  {q(a)} -- {q(b)};" for a, b in w.edges()]
    lines.append("}")
    return "\n".join(lines)


def _trace(s: Session, args: list[Any]) -> int:
    start = need_str("trace", "NODE", args[0])
    if "#" in start or any(c in start for c in " \t\r\n;"):
        raise Usage(f"trace: {start!r} is not a node ID: expected a node ID such as 'seed'")
    most = MAX_NODES
    if "--max" in s.options:
        text = str(s.options["--max"])
        most = int(text) if text.isdigit() else 0
        if most < 1:
            raise Usage(f"trace: --max must be a whole number of nodes, at least 1 (got {text!r})")
    dot = bool(s.options.get("--dot"))

    async def work(node: Any, limit: float) -> int:
        w = await _walk(node, start, limit, most)
        if start in w.problems:
            print(f"aemp: trace: {start}: {w.problems[start]}", file=sys.stderr)
            return 1
        if dot:
            print(_dot(w), flush=True)
        else:
            edges = w.edges()
            for a, b in edges:
                print(f"{a} -- {b}", flush=True)
            if not edges:
                print(start, flush=True)
        for n, why in w.problems.items():
            print(f"aemp: trace: {n}: {why}", file=sys.stderr)
        if w.cut:
            print(f"aemp: trace: stopped at --max {most} nodes; the graph goes on", file=sys.stderr)
        return 1 if w.problems or w.cut else 0

    return _talk(s, "trace", GLOBALS, work)


_ANON = (
    "When a node runs on this host (the one $AEMP_NODE names, else the only one), the "
    "command asks through it, on its control socket (see 'aemp help status'). Else it joins "
    "the network as an anonymous node through the seeds of profile "
    "'aemp', else of the default section, with that profile's secret or certificate, "
    "and asks the global nodes. "
)
_LIMIT = f"--timeout SECONDS (default {DEFAULT_TIMEOUT:g}) bounds the wait for an answer. "

COMMANDS: list[Command] = [
    Command(
        "nodes",
        "",
        "list the nodes the network knows: node ID, global or not, listeners",
        _nodes,
        G_NET,
        "Prints one line per node that listens (the 'l family of the database) or is "
        "global (the 'g family): its ID, 'global' or 'node', and its addresses ('-' for "
        'none); with --json, one JSON object {nodeid: {"global": ..., "listeners": '
        "[...]}}. Nodes that listen nowhere are not in the database: trace finds them. "
        + _ANON
        + _LIMIT
        + "Exit status 1 when no global node answers.",
        nargs=None,
        nmax=0,
        final=True,
        timeout=True,
        flags=("--json",),
    ),
    Command(
        "db",
        "[FAMILY]",
        "print a family of the database as JSON (no FAMILY: list the families); "
        "--watch follows its changes",
        _db,
        G_NET,
        "Without FAMILY, prints every family that has entries with its number of entries, "
        "as one JSON object {family: count}. "
        "Prints the family as one JSON object {subkey: value}; families starting with ' "
        "are the framework's ('l: where nodes listen, 'g: the global nodes). With --watch, "
        'prints one JSON line {"added": [...], "changed": [...], "deleted": [...], '
        '"view": {...}} first for the whole family, then for every change, until SIGINT or '
        "SIGTERM (exit status 0). Then the default timeout bounds only the wait for the "
        "first line, and an explicit --timeout the whole watch (exit status 0 when it "
        "runs out). " + _ANON + _LIMIT,
        nargs=None,
        nmin=0,
        nmax=1,
        final=True,
        timeout=True,
        flags=("--watch",),
        expects="a family name",
    ),
    Command(
        "trace",
        "NODE",
        "walk the connection graph from NODE and print its edges; --dot for Graphviz",
        _trace,
        G_NET,
        "Asks NODE which nodes it is connected to (the up_nodes request), then each of "
        "those that listens, breadth first, at most --max N nodes (default "
        f"{MAX_NODES}). Prints one line 'a -- b' per connection (NODE alone if it has "
        "none); with --dot, a Graphviz graph (global nodes boxed, nodes that listen "
        "nowhere and so were not asked dashed, nodes that did not answer red): "
        "'aemp trace seed --dot | dot -Tsvg > net.svg'. The anonymous node itself is "
        "left out. Each node gets --timeout SECONDS (default "
        f"{DEFAULT_TIMEOUT:g}) to answer. A node that does not answer is one line on "
        "stderr and makes the exit status 1, as does reaching --max. " + _ANON,
        nargs=None,
        nmin=1,
        nmax=1,
        final=True,
        timeout=True,
        flags=("--dot", "--max N"),
        expects="a node ID",
    ),
]
