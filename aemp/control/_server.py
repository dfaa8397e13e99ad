# The control socket's server: one per node, on the unix socket of
# _paths.py, speaking JSON lines (docs/control.md).
#
# A connection is checked first: the peer's uid (SO_PEERCRED) must be the
# node's own, else it gets one error line and is closed; the directory's
# mode keeps others out already, this holds even where that fails (root
# made it 0755, a socket passed along). Then each request line gets one
# reply line, in order; `watch` turns the connection into a stream of
# events. Requests are bounded (MAX_LINE; a longer line is an error and
# closes the connection), so are the connections (MAX_SESSIONS), their
# idle time and the events a slow watcher may leave unread. A line that is
# not a JSON object with a "cmd", or names an unknown command, gets an
# error line and the connection goes on: nothing a client sends harms the
# node. Each connection is a task the node owns; closing the node closes
# the server, removes the socket and drops the lock.
#
# May import aemp, aemp.lowlevel, the leaves and the capability's modules.

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import AempError, CallTimeout, DbTimeout, Node, PortDead, __version__, lowlevel
from ._paths import ControlError, make_dir, release_lock, socket_path, take_lock

log = logging.getLogger("aemp.control")

PROTOCOL = 1
MAX_LINE = 64 * 1024  # bytes of one request line, its newline included
MAX_SESSIONS = 32  # connections at once; more are told "busy" and closed
IDLE_TIMEOUT = 300.0  # seconds a connection may wait between requests
WRITE_TIMEOUT = 10.0  # seconds a reader may take to take a reply
MAX_EVENTS = 1000  # watch events a slow reader may leave unsent before it is cut off
DEFAULT_WAIT = 5.0  # seconds a command that asks the network waits, unless told
MAX_WAIT = 300.0
MAX_PORTS = 100_000  # ports one `ports` reply lists at most
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def to_line(obj: Any) -> bytes:
    """One JSON line; bytes become text (UTF-8, undecodable bytes as \\xNN)."""

    def default(v: Any) -> Any:
        if isinstance(v, bytes | bytearray):
            return bytes(v).decode("utf-8", "backslashreplace")
        if isinstance(v, tuple | set | frozenset):
            return list(v)
        raise TypeError(f"{type(v).__name__} is not JSON")

    return json.dumps(obj, default=default, ensure_ascii=False).encode() + b"\n"


class BadRequest(Exception):
    """A request the server cannot take: answered with an error, the connection goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _wait(args: dict[str, Any]) -> float:
    t = args.get("timeout", DEFAULT_WAIT)
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= MAX_WAIT:
        raise BadRequest(
            "bad_argument",
            f"timeout must be a number of seconds above 0, at most {MAX_WAIT:g} "
            f"(got {json.dumps(t)[:40]})",
        )
    return float(t)


def _text(args: dict[str, Any], key: str, default: str | None = None) -> str:
    v = args.get(key, default)
    if not isinstance(v, str) or not v:
        raise BadRequest(
            "bad_argument", f"{key} must be a non-empty string (got {json.dumps(v)[:60]})"
        )
    return v


class ControlServer:
    """A node's control socket (see the module header); made by aemp.control.serve."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.path: Path | None = None  # set once listening
        self._lock: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[asyncio.StreamWriter] = set()
        self._opening: asyncio.Future[None] | None = None
        self._connections = 0  # connections with a task, admitted or being turned away
        # a `stop` command is closing the node; stopped is set once all of it is closed
        # (aemp run waits for that before its event loop ends)
        self.stopping = False
        self.stopped = asyncio.Event()
        self.refused = 0  # connections refused for their uid
        self.bad_lines = 0  # request lines that were garbage, too long or unknown
        self.commands: dict[str, tuple[str, Callable[[dict[str, Any]], Awaitable[Any]]]] = {
            "hello": ("who the node is: node ID, pid, version, protocol", self._hello),
            "help": ("the commands and what they do", self._help),
            "status": ("the node's status report and statistics", self._status),
            "ports": ("the node's live ports, oldest first (limit: most to list)", self._ports),
            "stop": ("close the node (aemp run then exits)", self._stop),
            "nodes": ("the nodes the database knows: global or not, listeners", self._nodes),
            "db": ("a family of the database (what: family, keys or values)", self._db),
            "up_nodes": ("the nodes a node (default: this one) is connected to", self._up_nodes),
            "watch": ("follow a family of the database: one event line per change", self._watch),
        }

    # ---------------------------------------------------------------- opening and closing

    async def open(self) -> None:
        """Listen, unless listening already (or a live node of this ID holds the name)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        node = self.node
        path = socket_path(node.id, make_dir())
        fd = await take_lock(path)
        if fd is None:
            log.warning(
                "node %s: no control socket: a live node with this ID listens on %s", node.id, path
            )
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a dead node's: its lock was free
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(os.fspath(path))
                os.chmod(path, 0o600)
                sock.listen(MAX_SESSIONS)
                sock.setblocking(False)
                self._server = await asyncio.start_unix_server(
                    self._accepted, sock=sock, limit=MAX_LINE
                )
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            release_lock(path, fd)
            if isinstance(e, ControlError):
                raise
            raise ControlError(f"node {node.id}: cannot listen on {path}: {e.strerror}") from None
        except BaseException:
            release_lock(path, fd)
            raise
        self.path, self._lock = path, fd
        lowlevel.on_close(node, self.close)
        log.info("node %s: control socket %s", node.id, path)

    def close(self) -> None:
        """Stop listening, end every connection, remove the socket, drop the lock."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._sessions):
            w.close()
        if self.path is not None and self._lock is not None:
            release_lock(self.path, self._lock)
            self._lock = None

    # ---------------------------------------------------------------- connections

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # connections being turned away count too (each for a second at most),
        # so that a flood of them cannot pile up tasks
        if self.node.closed or self._connections >= 2 * MAX_SESSIONS:
            writer.close()
            return
        self._connections += 1
        lowlevel.spawn_task(self.node, self._session(reader, writer))

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await self._admit(reader, writer):
                return
            self._sessions.add(writer)
            while not self.node.closed:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
                except asyncio.IncompleteReadError:
                    return  # the client is done (a last line without newline is dropped)
                except asyncio.LimitOverrunError:
                    self.bad_lines += 1
                    await self._send(
                        writer,
                        self._error(
                            "line_too_long", f"request line longer than {MAX_LINE} bytes: closing"
                        ),
                    )
                    return
                except TimeoutError:
                    await self._send(
                        writer, self._error("idle", f"no request for {IDLE_TIMEOUT:g} s: closing")
                    )
                    return
                if not line.strip():
                    continue
                if not await self._request(line, reader, writer):
                    return
        except (ConnectionError, TimeoutError):
            return  # the client went away, or took no reply: nothing to tell
        finally:
            self._connections -= 1
            self._sessions.discard(writer)
            writer.close()

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _ = _CRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
            )
        except OSError as e:
            pid, uid = 0, -1
            log.warning("node %s: control socket: no peer credentials (%s)", self.node.id, e)
        if uid != os.geteuid():
            self.refused += 1
            log.warning(
                "node %s: control socket: refused pid %d of uid %d (only uid %d may)",
                self.node.id,
                pid,
                uid,
                os.geteuid(),
            )
            await self._turn_away(
                reader,
                writer,
                self._error(
                    "refused", f"refused: uid {uid} is not the node's user (uid {os.geteuid()})"
                ),
            )
            return False
        if len(self._sessions) >= MAX_SESSIONS:
            await self._turn_away(
                reader,
                writer,
                self._error(
                    "busy", f"{MAX_SESSIONS} control connections are open already: try again"
                ),
            )
            return False
        return True

    async def _turn_away(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: dict[str, Any]
    ) -> None:
        """Say why, then close: our side first, reading (and dropping) what the
        client sent meanwhile for a moment, so that its first write does not
        meet a closed socket and lose the reason before it reads it."""
        await self._send(writer, reply)
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(1.0):
                while await reader.read(MAX_LINE):
                    pass

    @staticmethod
    def _error(code: str, message: str, **data: Any) -> dict[str, Any]:
        return {"ok": False, "code": code, "error": message, **data}

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(to_line(reply))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _request(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request line; False when the connection should end."""
        rid: Any = None
        cmd = None
        try:
            try:
                req = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise BadRequest(
                    "bad_request",
                    f'not a JSON line ({e}): expected {{"cmd": "status"}} and the like',
                ) from None
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise BadRequest(
                    "bad_request",
                    'expected a JSON object with a "cmd" string, such as '
                    f'{{"cmd": "status"}} (got {line[:60].decode("utf-8", "replace").strip()!r})',
                )
            rid = req.get("id")
            cmd = req["cmd"]
            entry = self.commands.get(cmd)
            if entry is None:
                raise BadRequest(
                    "unknown_command",
                    f"unknown command {cmd[:60]!r}: expected "
                    f"one of {', '.join(sorted(self.commands))}",
                )
            if cmd == "watch":
                await self._watching(req, rid, reader, writer)
                return False
            result = await entry[1](req)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except BadRequest as e:
            self.bad_lines += 1
            reply = self._error(e.code, str(e))
        except (PortDead, CallTimeout, DbTimeout, AempError) as e:
            reply = self._error("failed", f"{type(e).__name__}: {e}", **_fields(e))
        except Exception as e:  # a bug of a command: said, logged, and the socket serves on
            log.exception("node %s: control command %r failed", self.node.id, cmd)
            reply = self._error("failed", f"internal error: {type(e).__name__}: {e}")
        if rid is not None:
            reply["id"] = rid
        await self._send(writer, reply)
        if reply["ok"] and cmd == "stop":
            await self.node.close()  # this task is the node's: close() leaves it be
            self.stopped.set()
            return False
        return True

    # ---------------------------------------------------------------- the commands

    async def _hello(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        return {
            "protocol": PROTOCOL,
            "nodeid": node.id,
            "pid": os.getpid(),
            "version": __version__,
            "started": node.started,
            "listeners": node.listeners,
        }

    async def _help(self, args: dict[str, Any]) -> dict[str, str]:
        return {name: text for name, (text, _) in sorted(self.commands.items())}

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        from ..metrics import address

        report = lowlevel.status(self.node)
        report["control"] = os.fspath(self.path) if self.path else None
        report["metrics"] = address(self.node)
        return report

    async def _ports(self, args: dict[str, Any]) -> dict[str, Any]:
        most = args.get("limit", 1000)
        if isinstance(most, bool) or not isinstance(most, int) or not 0 <= most <= MAX_PORTS:
            raise BadRequest(
                "bad_argument",
                f"limit must be an int from 0 to {MAX_PORTS} (got {json.dumps(most)[:40]})",
            )
        ids = lowlevel.ports(self.node)
        shown = []
        for port in ids[:most]:
            info = lowlevel.port_info(self.node, port)
            if info is not None:
                shown.append({"port": port, **info})
        return {"total": len(ids), "ports": shown}

    async def _stop(self, args: dict[str, Any]) -> dict[str, Any]:
        log.info("node %s: stop asked on the control socket", self.node.id)
        self.stopping = True
        return {"stopping": self.node.id}

    async def _nodes(self, args: dict[str, Any]) -> dict[str, Any]:
        limit = _wait(args)
        node = self.node
        listeners, globals_ = await asyncio.gather(
            node.db_family("'l", timeout=limit), node.db_keys("'g", timeout=limit)
        )
        out: dict[str, Any] = {}
        for n in sorted(set(listeners) | set(globals_)):
            addrs = listeners.get(n)
            addrs = [a for a in addrs if isinstance(a, str)] if isinstance(addrs, list) else []
            out[n] = {"global": n in globals_, "listeners": addrs}
        return out

    async def _db(self, args: dict[str, Any]) -> Any:
        what = _text(args, "what", "family")
        limit = _wait(args)
        if what == "families":
            return await self.node.db_families(timeout=limit)
        family = _text(args, "family")
        queries: dict[str, Callable[..., Awaitable[Any]]] = {
            "family": self.node.db_family,
            "keys": self.node.db_keys,
            "values": self.node.db_values,
        }
        if what not in queries:
            raise BadRequest(
                "bad_argument", f"what must be family, keys, values or families (got {what[:40]!r})"
            )
        return await queries[what](family, timeout=limit)

    async def _up_nodes(self, args: dict[str, Any]) -> list[str]:
        node = self.node
        target = _text(args, "node", node.id)
        if target == node.id:
            return sorted(node.up_nodes())
        limit = _wait(args)
        reply = await node.cal(target, "up_nodes", timeout=limit)
        up = reply[0] if len(reply) == 1 else None
        if not isinstance(up, list):
            raise ControlError(f"{target} answered {str(reply)[:80]} instead of a list", "failed")
        return [n for n in up if isinstance(n, str)]

    async def _watch(self, args: dict[str, Any]) -> None:  # pragma: no cover - _watching runs it
        raise AssertionError("watch is served by _watching")

    async def _watching(
        self,
        req: dict[str, Any],
        rid: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        family = _text(req, "family")
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        overflow = False

        def changed(view: Any, added: Any, changed: Any, deleted: Any) -> None:
            nonlocal overflow
            if overflow:
                return
            if events.qsize() >= MAX_EVENTS:
                overflow = True
                events.put_nowait(None)  # the reader is too slow: cut it off
                return
            events.put_nowait(
                {
                    "added": sorted(added),
                    "changed": sorted(changed),
                    "deleted": sorted(deleted),
                    "view": {k: view[k] for k in sorted(view)},
                }
            )

        handle = self.node.db_mon(family, changed)
        gone = asyncio.ensure_future(reader.read(1))  # anything or EOF ends the watch
        try:
            first = {"ok": True, "result": {"watching": family}}
            if rid is not None:
                first["id"] = rid
            await self._send(writer, first)
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                event = get.result()
                if event is None:
                    await self._send(
                        writer,
                        self._error("too_slow", f"more than {MAX_EVENTS} events unread: closing"),
                    )
                    return
                await self._send(writer, {"event": event})
        finally:
            handle.cancel()
            gone.cancel()


def _fields(e: Exception) -> dict[str, Any]:
    """What a client needs to raise the same error again."""
    if isinstance(e, PortDead):
        return {"type": "PortDead", "port": e.port, "reason": list(e.reason)}
    if isinstance(e, CallTimeout):
        return {"type": "CallTimeout", "port": e.port, "timeout": e.timeout}
    if isinstance(e, DbTimeout):
        return {"type": "DbTimeout", "query": e.query, "timeout": e.timeout, "where": e.where}
    return {"type": type(e).__name__}


async def serve(node: Node) -> ControlServer:
    """The node's control server, listening (made on the first call).

    Its ``path`` is None when a live node with the same ID holds the name
    (logged as a warning). Raises ControlError when the runtime directory
    cannot be used.
    """
    server: ControlServer = lowlevel.extension(node, "aemp.control", lambda: ControlServer(node))
    await server.open()
    return server
