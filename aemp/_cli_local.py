# The aemp command's look at the nodes on this host, through their control
# sockets (aemp.control, docs/control.md): ps, status, ports and stop; and
# the route that `nodes`, `db` and `trace` take through a local node.
#
# A local node is reached without the network's secret: the control socket
# sits in this user's private runtime directory and the node checks the
# peer's uid. `status NODE` for a node that has no socket here asks it over
# the network instead (the "status" node request), on the anonymous node
# of _cli_net, with profile "aemp"'s seeds and secret. `nodes`, `db` and
# `trace` use the local node named by $AEMP_NODE, else the only one that
# runs here; with none (or AEMP_NODE set empty) they join the network as
# before. The control client is imported inside the functions, so that
# `aemp --help` stays fast.

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._cli_base import Command, Failure, Session, Usage, need_str, to_json
from ._cli_net import DEFAULT_TIMEOUT, _failure, _Logging, _talk
from ._errors import AempError, CallTimeout, PortDead

G_LOCAL = "the nodes on this host (through their control sockets, no secret needed)"
ENV_NODE = "AEMP_NODE"
MAX_PARALLEL = 8  # control connections one command opens at once (trace asks many nodes)

T = TypeVar("T")
Work = Callable[[Any, float], Awaitable[int]]


def _limit(s: Session) -> float:
    return s.timeout if s.timeout is not None else DEFAULT_TIMEOUT


def _nodeid(cmd: str, arg: Any) -> str:
    nodeid = need_str(cmd, "NODE", arg)
    if "#" in nodeid or any(c in nodeid for c in " \t\r\n;"):
        raise Usage(f"{cmd}: {nodeid!r} is not a node ID: expected a node ID such as 'seed'")
    return nodeid


def _run(cmd: str, main: Awaitable[T]) -> T:
    """Run main on an event loop; a ControlError becomes the command's failure."""
    from ._current import run
    from .control import ControlError

    async def wrapped() -> T:
        return await main

    try:
        return run(wrapped())
    except ControlError as e:
        raise Failure(f"{cmd}: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _only_node(cmd: str) -> str:
    """The one local node, for a command given no NODE."""
    from .control import local_nodes

    found = [n["nodeid"] for n in await local_nodes() if n.get("nodeid")]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise Failure(f"{cmd}: no node runs here with a control socket (start one with 'aemp run')")
    raise Failure(f"{cmd}: {len(found)} nodes run here ({', '.join(found)}): name one")


# ---------------------------------------------------------------- formatting


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    parts = [(s // 86400, "d"), (s // 3600 % 24, "h"), (s // 60 % 60, "min"), (s % 60, "s")]
    shown = [f"{v} {u}" for v, u in parts if v]
    return " ".join(shown[:2])


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def format_status(st: dict[str, Any]) -> list[str]:
    """The status report for people (--json prints it as it came)."""
    s = st.get("statistics", {})
    db = s.get("db", {})
    out = [
        f"node        {st.get('nodeid')} (pid {st.get('pid')}, aemp {st.get('version')})",
        f"uptime      {_duration(float(st.get('uptime', 0)))}",
        f"listening   {', '.join(st.get('listeners') or []) or '-'}",
    ]
    if st.get("control"):
        out.append(f"control     {st['control']}")
    if st.get("metrics"):
        out.append(f"metrics     http://{st['metrics']}/metrics")
    role = "global node" if st.get("global") else f"master {st.get('master') or '(none yet)'}"
    out.append(
        f"database    {role}; {_plural(db.get('entries', 0), 'entry')} of its own, "
        f"{_plural(db.get('monitors', 0), 'monitor')} on "
        f"{_plural(db.get('families', 0), 'family')}, "
        f"{db.get('queries', 0)} queries pending"
        + (f", {db.get('merged', 0)} merged entries" if st.get("global") else "")
    )
    out.append(
        f"ports       {s.get('ports', 0)} (run queue {s.get('queued', 0)}, "
        f"backlog {s.get('backlog', 0)})"
    )
    out.append(f"calls       {s.get('calls', 0)} pending")
    links = s.get("links", {})
    up = len(links) + s.get("links_omitted", 0)
    out.append(
        f"links       {up} up; {s.get('links_up', 0)} came up, {s.get('links_lost', 0)} "
        f"lost, {_plural(s.get('restarts', 0), 'restart')}"
    )
    width = max((len(n) for n in links), default=0)
    for n, link in links.items():
        out.append(
            f"  {n:<{width}}  {link.get('address')}  {link.get('framing')}"
            + (f" {link['tls']}" if link.get("tls") else "")
            + f"  in {link.get('bytes_in', 0)} B/{link.get('packets_in', 0)} pkts"
            + f"  out {link.get('bytes_out', 0)} B/{link.get('packets_out', 0)} pkts"
        )
    if s.get("links_omitted"):
        out.append(f"  ... and {s['links_omitted']} more")
    remotes = ", ".join(f"{k} {v}" for k, v in sorted(s.get("remotes", {}).items()))
    out.append(
        f"other       tasks {s.get('tasks', 0)}, timers {s.get('timers', 0)}, routes "
        f"{s.get('routes', 0)}, remotes {remotes or 'none'}, unreachable "
        f"{s.get('unreachable', 0)}, reading {'paused' if s.get('reading_paused') else 'on'}"
    )
    return out


# ---------------------------------------------------------------- ps


def _ps(s: Session, args: list[Any]) -> int:
    as_json = bool(s.options.get("--json"))

    async def main() -> int:
        from .control import local_nodes

        nodes = await local_nodes(min(_limit(s), 5.0))
        if as_json:
            print(to_json(nodes, indent=2), flush=True)
            return 0
        rows = [("NODE", "PID", "UPTIME", "LISTENERS")]
        now = time.time()
        for n in nodes:
            if n.get("error"):
                rows.append(("?", "-", "-", f"{n['control']}: {n['error']}"))
                continue
            started = n.get("started")
            up = _duration(now - started) if isinstance(started, int | float) else "-"
            rows.append((n["nodeid"], str(n.get("pid")), up, ",".join(n["listeners"]) or "-"))
        if len(rows) == 1:
            return 0  # nothing runs here: nothing to print
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
        return 0

    return _run("ps", main())


# ---------------------------------------------------------------- status, ports, stop


async def _local(cmd: str, nodeid: str, request: str, wait: float, **args: Any) -> Any:
    """The result of `request` on the local node `nodeid`; ControlError if none runs here."""
    from .control import connect

    async with await connect(nodeid) as c:
        async with asyncio.timeout(wait):
            return await c.request(request, **args)


def _status(s: Session, args: list[Any]) -> int:
    from .control import ControlError

    as_json = bool(s.options.get("--json"))
    limit = _limit(s)

    def show(report: Any) -> int:
        if not isinstance(report, dict):
            raise Failure(f"status: the node answered {to_json(report)[:80]}, not a report")
        if as_json:
            print(to_json(report, indent=2), flush=True)
        else:
            print("\n".join(format_status(report)), flush=True)
        return 0

    async def local() -> Any:
        nodeid = _nodeid("status", args[0]) if args else await _only_node("status")
        try:
            return await _local("status", nodeid, "status", limit)
        except ControlError as e:
            if e.code == "no_node" and args:
                return None  # not here: ask it over the network
            raise
        except TimeoutError:
            raise Failure(f"status: {nodeid} did not answer within {limit:g} s") from None

    report = _run("status", local())
    if report is not None:
        return show(report)
    nodeid = _nodeid("status", args[0])

    async def work(node: Any, limit: float) -> int:
        try:
            reply = await node.cal(nodeid, "status", timeout=limit)
        except CallTimeout:
            raise Failure(
                f"status: no answer from {nodeid} within {limit:g} s (it does not run here; "
                "over the network, a node of an older aemp does not know 'status')"
            ) from None
        return show(reply[0] if len(reply) == 1 else reply)

    try:
        return _talk(s, "status", nodeid, work)
    except Failure as e:
        text = str(e).removeprefix("status: ")
        raise Failure(f"status: {nodeid} does not run here; over the network: {text}") from None


def _ports(s: Session, args: list[Any]) -> int:
    as_json = bool(s.options.get("--json"))
    most = 1000
    if "--max" in s.options:
        text = str(s.options["--max"])
        most = int(text) if text.isdigit() else -1
        if not 0 <= most <= 100_000:
            raise Usage(f"ports: --max must be a whole number from 0 to 100000 (got {text!r})")
    limit = _limit(s)

    async def main() -> int:
        nodeid = _nodeid("ports", args[0]) if args else await _only_node("ports")
        try:
            got = await _local("ports", nodeid, "ports", limit, limit=most)
        except TimeoutError:
            raise Failure(f"ports: {nodeid} did not answer within {limit:g} s") from None
        if as_json:
            print(to_json(got, indent=2), flush=True)
            return 0
        for p in got["ports"]:
            watchers = ",".join(p.get("watchers") or []) or "-"
            print(
                f"{p['port']}  monitors {p.get('monitors', 0)}  backlog {p.get('backlog', 0)}"
                f"  watched by {watchers}",
                flush=True,
            )
        if got["total"] > len(got["ports"]):
            print(f"... {got['total'] - len(got['ports'])} more (--max N shows more)", flush=True)
        return 0

    return _run("ports", main())


def _stop(s: Session, args: list[Any]) -> int:
    nodeid = _nodeid("stop", args[0])
    limit = _limit(s)

    async def main() -> int:
        from .control import ControlError, connect

        async with await connect(nodeid) as c:
            try:
                async with asyncio.timeout(limit):
                    info = await c.request("hello")
                    await c.request("stop")
                    # the node closes the connection once it is closed itself
                    with contextlib.suppress(ControlError):
                        await c.receive()
            except TimeoutError:
                raise Failure(f"stop: {nodeid} did not stop within {limit:g} s") from None
        print(f"stopped {nodeid} (pid {info.get('pid')})", flush=True)
        return 0

    return _run("stop", main())


# ---------------------------------------------------------------- nodes, db, trace


class _Via:
    """What nodes, db and trace use of a node, done by a local node over its
    control socket: db_family, db_keys, db_families, db_mon, cal of up_nodes,
    master."""

    id = ""  # no node of the network is this one: trace leaves none out

    def __init__(self, path: Any, nodeid: str, master: str | None) -> None:
        self.path = path
        self.nodeid = nodeid
        self.master = master
        self.broken: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        self._parallel = asyncio.Semaphore(MAX_PARALLEL)
        self._tasks: set[asyncio.Task[None]] = set()

    async def _request(self, cmd: str, **args: Any) -> Any:
        from .control import Client

        async with self._parallel, await Client.connect(self.path) as c:
            return await c.request(cmd, **args)

    # named and called as a Node's methods are, so that the commands' work
    # runs unchanged on either

    def db_family(self, family: str, timeout: float) -> Awaitable[Any]:
        return self._request("db", family=family, what="family", timeout=timeout)

    def db_keys(self, family: str, timeout: float) -> Awaitable[Any]:
        return self._request("db", family=family, what="keys", timeout=timeout)

    def db_families(self, timeout: float) -> Awaitable[Any]:
        return self._request("db", what="families", timeout=timeout)

    def cal(self, nodeid: str, tag: str, timeout: float) -> Awaitable[tuple[Any, ...]]:
        if tag != "up_nodes":  # pragma: no cover - only trace's request goes this way
            raise AempError(f"the control socket does not relay {tag!r}")

        async def ask() -> tuple[Any, ...]:
            return (await self._request("up_nodes", node=nodeid, timeout=timeout),)

        return ask()

    def db_mon(self, family: str, cb: Callable[..., None]) -> None:
        async def follow() -> None:
            from .control import Client

            try:
                async with await Client.connect(self.path) as c:
                    async for ev in c.watch(family):
                        cb(ev["view"], ev["added"], ev["changed"], ev["deleted"])
                raise AempError(f"the node {self.nodeid} ended the watch")
            except Exception as e:
                if not self.broken.done():
                    self.broken.set_result(e)

        task = asyncio.ensure_future(follow())
        self._tasks.add(task)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pick() -> tuple[Any, str, str | None] | list[str]:
    """(socket, node ID, master) of the local node to use, or the local nodes
    there are when none is chosen: then the command joins the network."""
    from .control import ControlError, local_nodes, socket_path

    wanted = os.environ.get(ENV_NODE)
    if wanted == "":
        return []
    if wanted is not None:
        from .control import connect

        try:
            async with await connect(wanted) as c:
                status = await c.request("status")
        except ControlError as e:
            raise Failure(f"{ENV_NODE}={wanted}: {e}") from None
        return socket_path(wanted), wanted, status.get("master")
    nodes = [n for n in await local_nodes() if n.get("nodeid")]
    if len(nodes) != 1:
        return [str(n["nodeid"]) for n in nodes]
    from .control import connect

    nodeid = str(nodes[0]["nodeid"])
    try:
        async with await connect(nodeid) as c:
            status = await c.request("status")
    except ControlError:
        return []  # it went away meanwhile: join the network
    return nodes[0]["control"], nodeid, status.get("master")


def talk(s: Session, cmd: str, port: str, work: Work) -> int:
    """Run work(node, limit) on the local node when one is chosen (see the
    header), else on the anonymous node of _cli_net, which joins the network."""
    limit = _limit(s)
    chosen = _run(cmd, _pick())
    if isinstance(chosen, list):
        try:
            return _talk(s, cmd, port, work)
        except Failure as e:
            if len(chosen) < 2:
                raise
            raise Failure(
                f"{e} ({len(chosen)} nodes run here: {ENV_NODE}=NODE asks one of them)"
            ) from None
    path, nodeid, master = chosen

    async def main() -> int:
        via = _Via(path, nodeid, master)
        job = asyncio.ensure_future(work(via, limit))
        either: set[asyncio.Future[Any]] = {job, via.broken}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                job.cancel()
                raise via.broken.result()
            return job.result()
        finally:
            job.cancel()
            await via.aclose()

    with _Logging(s.verbose, logging.ERROR) as logs:
        try:
            return _run(cmd, main())
        except (Failure, BrokenPipeError):
            raise
        except (PortDead, AempError, OSError, TimeoutError) as e:
            raise _failure(cmd, f"{port} (through local node {nodeid})", e, logs, limit) from None


_LOCAL_TEXT = (
    "The command talks to the node through its control socket in this user's runtime "
    "directory ($XDG_RUNTIME_DIR/aemp, else /tmp/aemp-UID): no secret is needed, only the "
    "same user. --timeout SECONDS (default 5) bounds the wait."
)

COMMANDS: list[Command] = [
    Command(
        "ps",
        "",
        "list the nodes running on this host (node ID, pid, uptime, listeners)",
        _ps,
        G_LOCAL,
        "Lists every node of this user on this host that has a control socket (aemp run "
        "starts one; the key 'control true' does in a program); with --json, a JSON list "
        "of what each node answers to 'hello'. Sockets of nodes that died (SIGKILL) are "
        "removed on the way. " + _LOCAL_TEXT,
        nargs=None,
        nmax=0,
        final=True,
        timeout=True,
        flags=("--json",),
    ),
    Command(
        "status",
        "[NODE]",
        "print a node's uptime, ports, links, calls pending, database and statistics",
        _status,
        G_LOCAL,
        "Asks the node on this host through its control socket; without NODE, the one node "
        "that runs here. A NODE that does not run here is asked over the network (the "
        "'status' node request) through the seeds of profile 'aemp', else of the default "
        "section, with that profile's secret or certificate. --json prints the report as "
        "JSON (docs/control.md lists its fields). " + _LOCAL_TEXT,
        nargs=None,
        nmax=1,
        final=True,
        timeout=True,
        flags=("--json",),
    ),
    Command(
        "ports",
        "[NODE]",
        "list a local node's live ports with their monitors, watchers and backlog",
        _ports,
        G_LOCAL,
        "Oldest first, one line each: the port ID, its local monitors, the messages waiting "
        "in it and the other nodes that monitor it; at most --max N (default 1000); --json "
        "for JSON. Without NODE, the one node that runs here. " + _LOCAL_TEXT,
        nargs=None,
        nmax=1,
        final=True,
        timeout=True,
        flags=("--json", "--max N"),
    ),
    Command(
        "stop",
        "NODE",
        "close a node running on this host (aemp run then exits 0)",
        _stop,
        G_LOCAL,
        "Closes the node as SIGTERM would close 'aemp run' and waits until it is closed. "
        + _LOCAL_TEXT,
        nargs=None,
        nmin=1,
        nmax=1,
        final=True,
        timeout=True,
        expects="a node ID (aemp ps lists them)",
    ),
]
