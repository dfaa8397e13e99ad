# The aemp command's node commands: run a node, and talk to running ones.
#
# `run` starts the process's node with configure() and serves until SIGINT
# or SIGTERM. snd, cal and mon each start a short-lived anonymous node
# ("anon/<random>") that reaches the network through the seeds of profile
# "aemp" (or of the default section, which that profile inherits) and
# authenticates with that profile's secret or certificate. It binds no
# address: the nodes it talks to are found through the global nodes (the
# seeds), which know where every node listens. The commands that read the
# database (nodes, db, trace) live in _cli_inspect and use the same node.

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ._cli_base import (
    Command,
    Failure,
    Session,
    Usage,
    configure_args,
    need_str,
    to_json,
)
from ._config import resolve_keys
from ._errors import AempError, CallTimeout, DbTimeout, PortDead
from ._ids import check_port_id, node_of

log = logging.getLogger("aemp.cli")

G_NET = "running nodes and talking to them"
DEFAULT_TIMEOUT = 5.0
ANON_PROFILE = "aemp"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LastProblem(logging.Handler):
    """Keeps the last warning, to say why a node could not be reached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


class _Logging:
    """aemp's log lines on stderr for the duration of one command."""

    def __init__(self, verbose: int, default: int) -> None:
        levels = {0: default, 1: logging.INFO}
        self.level = levels.get(verbose, logging.DEBUG)
        self.stderr = logging.StreamHandler(sys.stderr)
        self.stderr.setFormatter(logging.Formatter(_FORMAT))
        self.stderr.setLevel(self.level)
        self.problems = _LastProblem()
        self.logger = logging.getLogger("aemp")

    def __enter__(self) -> _Logging:
        self.saved = self.logger.level
        self.logger.setLevel(min(self.level, logging.WARNING))
        self.logger.addHandler(self.stderr)
        self.logger.addHandler(self.problems)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.stderr)
        self.logger.removeHandler(self.problems)
        self.logger.setLevel(self.saved)


def _aemp_run(main: Coroutine[Any, Any, int]) -> int:
    from ._current import run

    try:
        return run(main)
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- run


def import_paths(extra: str | bool | None) -> list[str]:
    """Where `run` finds the modules of services and spawn targets, as
    `python -m` does: the current directory, then each --path entry."""
    paths = [os.getcwd()]
    if isinstance(extra, str):
        paths += [os.path.abspath(p) for p in extra.split(os.pathsep) if p]
    return paths


def _run(s: Session, args: list[Any]) -> int:
    ca = configure_args("run", args)
    profile = ca.profile or s.target
    for path in reversed(import_paths(s.options.get("--path"))):
        if path not in sys.path:
            sys.path.insert(0, path)
    with _Logging(s.verbose, logging.INFO):
        return _aemp_run(_serve(profile, ca.norc, ca.force, ca.keys))


async def _serve(profile: str | None, norc: bool, force: bool, keys: dict[str, Any]) -> int:
    from . import configure, lowlevel

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            # a control socket unless the file (or the line) says control false
            node = await configure(profile, norc=norc, force=force, **{"control": True, **keys})
        except AempError as e:
            raise Failure(f"run: {e}") from None
        except Exception as e:
            notes = "; ".join(getattr(e, "__notes__", ()))
            raise Failure(f"run: {type(e).__name__}: {e}" + (f" ({notes})" if notes else "")) from e
        listening = ", ".join(node.listeners) or "no address"
        log.info("node %s is up, listening on %s", node.id, listening)
        lowlevel.on_close(node, stop.set)  # `aemp stop` closes it through its control socket
        await stop.wait()
        if got:
            log.info("node %s: %s received, closing", node.id, got[0])
        elif node.config.control:
            from .control import serve

            server = await serve(node)
            if server.stopping:  # closed by `aemp stop`: let that finish before the loop ends
                async with asyncio.timeout(10):
                    await server.stopped.wait()
        await node.close()
        log.info("node %s closed", node.id)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------- snd, cal, mon


def _anon_keys(s: Session) -> dict[str, Any]:
    """The anonymous node's keys: profile "aemp" (or the one being edited), no binds."""
    profile = s.target or ANON_PROFILE
    try:
        keys = resolve_keys(s.data, profile, {}, path=s.path)
    except AempError as e:
        raise Failure(str(e)) from None
    for key in ("nodeid", "binds", "services"):
        keys.pop(key, None)
    if not keys.get("seeds"):
        raise Failure(
            f"no seeds in profile {profile!r} or the default section of {s.path}: the "
            f"anonymous node would reach nothing (set them with 'aemp seeds HOST:PORT')"
        )
    return {"nodeid": "anon/", "binds": [], **keys}


def _port(cmd: str, arg: Any) -> str:
    port = need_str(cmd, "PORT", arg)
    try:
        return check_port_id(port)
    except AempError as e:
        raise Usage(f"{cmd}: {e}") from None


def _failure(cmd: str, port: str, e: BaseException, logs: _Logging, limit: float) -> Failure:
    if isinstance(e, DbTimeout):
        last = f"; last problem: {logs.problems.last}" if logs.problems.last else ""
        return Failure(f"{cmd}: no answer from {port} within {e.timeout:g} s ({e.where}{last})")
    if isinstance(e, CallTimeout | TimeoutError):
        if cmd == "mon" and not isinstance(e, CallTimeout):
            return Failure(f"mon: {port} did not die within {limit:g} s")
        return Failure(f"{cmd}: no answer from {port} within {limit:g} s")
    if isinstance(e, PortDead):
        reason = e.reason
        if reason[:1] == ("transport_error",) and len(reason) >= 3:
            why = f"{cmd}: cannot reach node {reason[1]!r}: {reason[2]}"
            if logs.problems.last:
                why += f" (last problem: {logs.problems.last})"
            return Failure(why)
        return Failure(f"{cmd}: port {port} died: {to_json(list(reason))}")
    return Failure(f"{cmd}: {e}")


def _talk(s: Session, cmd: str, port: str, work: Any) -> int:
    """Run work(node) on an anonymous node, mapping failures to one line."""
    from ._node import Node

    keys = _anon_keys(s)
    timeout = s.timeout if s.timeout is not None else DEFAULT_TIMEOUT

    async def main() -> int:
        async with Node(**keys) as node:
            result: int = await work(node, timeout)
            return result

    with _Logging(s.verbose, logging.ERROR) as logs:
        try:
            return _aemp_run(main())
        except (Failure, BrokenPipeError):  # a closed stdout ends quietly, in main()
            raise
        except (AempError, OSError, TimeoutError) as e:
            raise _failure(cmd, port, e, logs, timeout) from None


async def _confirm(
    node: Any, port: str, died: asyncio.Future[tuple[Any, ...]], limit: float
) -> None:
    """Wait until PORT's node has taken what was sent (it answers "time"
    after it, on the same connection), and fail if PORT never existed."""
    await node.cal(node_of(port), "time", timeout=limit)
    await asyncio.sleep(0)  # a death told before the answer is delivered before it too
    if died.done() and died.result()[:1] == ("no_such_port",):
        raise Failure(f"{port} does not exist (node {node_of(port)} has no such port)")


def _death(node: Any, port: str) -> asyncio.Future[tuple[Any, ...]]:
    """A future for PORT's kill reason (a port: its node says when it does not exist)."""
    died: asyncio.Future[tuple[Any, ...]] = node.loop.create_future()
    if "#" in port:

        def on_death(*reason: Any) -> None:
            if not died.done():
                died.set_result(reason)

        node.mon(port, on_death)
    return died


def _to_port(s: Session, cmd: str, port: str, act: Callable[[Any], None], note: str = "") -> int:
    """snd and kil: act on the port, then confirm it exists (a dead one fails)."""

    async def work(node: Any, limit: float) -> int:
        died = _death(node, port)
        act(node)
        try:
            await _confirm(node, port, died, limit)
        except Failure as e:
            raise Failure(f"{cmd}: {e}{note}") from None
        return 0

    return _talk(s, cmd, port, work)


def _snd(s: Session, args: list[Any]) -> int:
    port = _port("snd", args[0])
    msg = args[1:]
    return _to_port(s, "snd", port, lambda node: node.snd(port, *msg), "; the message was dropped")


def _kil(s: Session, args: list[Any]) -> int:
    port = _port("kil", args[0])
    if "#" not in port:
        raise Usage(f"kil: {port!r} is a node ID: expected a port ID (node#name)")
    reason = args[1:]
    return _to_port(s, "kil", port, lambda node: node.kil(port, *reason))


def _spawn(s: Session, args: list[Any]) -> int:
    target_node = need_str("spawn", "NODE", args[0])
    try:
        check_port_id(target_node)
    except AempError as e:
        raise Usage(f"spawn: {e}") from None
    if "#" in target_node:
        raise Usage(f"spawn: {target_node!r} is a port ID: expected a node ID")
    target = need_str("spawn", "TARGET", args[1])

    async def work(node: Any, limit: float) -> int:
        try:
            port = node.spawn(target_node, target, *args[2:])
        except AempError as e:
            raise Failure(f"spawn: {e}") from None
        died = _death(node, port)
        # two round trips: the spawn request, then its first turn, are behind us
        await node.cal(target_node, "time", timeout=limit)
        await node.cal(target_node, "time", timeout=limit)
        await asyncio.sleep(0)
        if died.done() and died.result():
            raise Failure(f"spawn: {port} died at once: {to_json(list(died.result()))}")
        print(port, flush=True)
        return 0

    return _talk(s, "spawn", target_node, work)


def _cal(s: Session, args: list[Any]) -> int:
    port = _port("cal", args[0])
    msg = args[1:]

    async def work(node: Any, limit: float) -> int:
        reply = await node.cal(port, *msg, timeout=limit)
        if "#" not in port and len(reply) == 2 and reply[0] == "error":
            raise Failure(f"cal: {reply[1]}")  # the node's answer to an unknown request
        print(to_json(list(reply)), flush=True)
        return 0

    return _talk(s, "cal", port, work)


def _mon(s: Session, args: list[Any]) -> int:
    port = _port("mon", args[0])
    total = s.timeout  # only an explicit --timeout limits the wait for the death

    async def work(node: Any, limit: float) -> int:
        died: asyncio.Future[tuple[Any, ...]] = node.loop.create_future()

        def on_death(*reason: Any) -> None:
            if not died.done():
                died.set_result(reason)

        node.mon(port, on_death)
        # once the node answered, it has the monitor (or said the port is unknown)
        await node.cal(node_of(port), "time", timeout=limit)
        log.info("mon: watching %s", port)
        async with asyncio.timeout(total):
            reason = await died
        print(to_json(list(reason)), flush=True)
        if reason[:1] == ("transport_error",):
            why = reason[2] if len(reason) > 2 else "connection lost"
            raise Failure(f"mon: lost the connection to the node of {port}: {why}")
        return 0

    return _talk(s, "mon", port, work)


_JOIN_TEXT = (
    "PORT is a port ID (node#name) or a node ID (the node port). The command joins the "
    "network as an anonymous node through the seeds of profile 'aemp', else of the default "
    "section, with that profile's secret or certificate; PORT's node must listen somewhere "
    "(the global nodes, the seeds, say where)."
)
_PORT_TEXT = (
    _JOIN_TEXT + " An argument that is a JSON number is sent as a number, one that starts "
    'with [, { or " as JSON, anything else as a string. --timeout SECONDS (default 5) '
    "bounds the wait; exit status 1 when it runs out or PORT's node cannot be reached."
)

COMMANDS: list[Command] = [
    Command(
        "run",
        "[PROFILE] [KEY VALUE ...]",
        "run a node configured from the file until SIGINT or SIGTERM",
        _run,
        G_NET,
        "Runs aemp.configure(profile=PROFILE, KEY=VALUE, ...) and its services, logs a line "
        "with the node ID and listeners on stderr, serves until SIGINT or SIGTERM, then "
        "closes the node and exits with status 0. 'profile NAME', 'norc true' and "
        "'force true' may be given as KEY VALUE pairs. Values as for the set commands: "
        "'aemp run nodeid n1 binds 127.0.0.1:4040'. The node listens on a control socket "
        "for 'aemp ps', 'status', 'ports' and 'stop' (which ends the run with status 0), "
        "unless the file or the line says 'control false'. Modules (services, spawn "
        "targets) are imported from the current directory first, as 'python -m' does, then "
        "from the usual places; --path DIR adds directories (several joined by "
        f"'{os.pathsep}') in front of those.",
        nargs=None,
        final=True,
        flags=("--path DIR",),
    ),
    Command(
        "snd",
        "PORT ARGS...",
        "send the message ARGS to PORT; exit 0 once PORT's node has it",
        _snd,
        G_NET,
        _PORT_TEXT,
        nargs=None,
        nmin=2,
        final=True,
        timeout=True,
        numbers=True,
        expects="a port ID and a message",
    ),
    Command(
        "cal",
        "PORT ARGS...",
        "send ARGS plus a reply port to PORT, print the reply (JSON)",
        _cal,
        G_NET,
        _PORT_TEXT,
        nargs=None,
        nmin=2,
        final=True,
        timeout=True,
        numbers=True,
        expects="a port ID and a message",
    ),
    Command(
        "mon",
        "PORT",
        "wait until PORT dies, print the reason (JSON)",
        _mon,
        G_NET,
        "Exits 0 with the kill reason ([] for a normal exit) once the port dies, or at "
        "once when it does not exist; exits 1 if the connection to its node is lost. "
        "The default timeout of 5 s only bounds reaching the node; an explicit --timeout "
        "bounds the whole wait. " + _JOIN_TEXT,
        nargs=None,
        nmin=1,
        nmax=1,
        final=True,
        timeout=True,
        expects="a port ID",
    ),
    Command(
        "kil",
        "PORT [REASON...]",
        "kill PORT: no REASON is a normal exit, any REASON an abnormal one",
        _kil,
        G_NET,
        "Exits 0 once PORT's node has taken the kill, 1 if PORT does not exist or its node "
        "cannot be reached. REASON arguments are read as for snd. " + _JOIN_TEXT,
        nargs=None,
        nmin=1,
        final=True,
        timeout=True,
        numbers=True,
        expects="a port ID",
    ),
    Command(
        "spawn",
        "NODE TARGET [ARGS...]",
        "start a port on NODE running TARGET(*ARGS) ('pkg.mod:func'); print its port ID",
        _spawn,
        G_NET,
        "NODE runs only functions marked @aemp.spawnable or named by its spawn_allow, and "
        "must be able to import them (start 'aemp run' where the code is, or with --path). "
        "Exits 1 when NODE refuses the spawn or the function fails at once (with the kill "
        "reason), or NODE cannot be reached. ARGS are read as for snd. " + _JOIN_TEXT,
        nargs=None,
        nmin=2,
        final=True,
        timeout=True,
        numbers=True,
        expects="a node ID and a function 'pkg.mod:func'",
    ),
]
