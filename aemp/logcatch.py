"""aemp.logcatch: the log records of every node, caught in one place.

Two halves meet in the distributed database. A node that shares its log
installs a LogForwarder (``forward()``, or the service
``"aemp.logcatch:forward"``): a logging.Handler on its root logger (or
another) that turns each record into plain data (node, time, level,
logger, message, exception text) and sends it to every catcher that wants
it. A catcher (``LogCatcher``, or ``aemp log`` on the command line) is a
port registered with db_reg in the family ``aemp.logcatch``, its value the
level and logger names it wants, so forwarders filter at the source; each
forwarder follows that family with db_mon and monitors each catcher.

No loops. A record is never forwarded when it comes from the forwarding
path itself: records of the logger ``aemp.logcatch`` (this module's),
records logged while the forwarder sends (snd may log), and records logged
in the context of the forwarder's own port or of a catcher port of this
node (a catcher's callback that logs what it caught). A node whose catcher
logs about its work therefore does not feed its own log back to itself. A
record logged in the context of another node of the same process
(aemp.lowlevel: the node whose callback runs) is left to that node's own
forwarder.

Bounded. While no catcher is known (or every known one was seen to die),
a forwarder keeps the last `buffer` records; older ones are dropped and
counted, with one warning on the node per episode. The next catcher gets
what was kept, then a record from ``aemp.logcatch`` that says how many were
dropped, then a ``log_sync`` message: ``aemp log`` knows from it that this
node has sent what it kept. A catcher keeps at most `queue` records for its
iterator (older ones are dropped and counted). Messages are sent with snd:
records on their way to a catcher whose node then fails are lost, as any
message is (the forwarder's monitor on it turns buffering on again).
Anything a catcher gets that is not a log record is ignored and counted.

Records from other threads (aemp.blocking work) reach the loop through a
bounded queue of their own. A capability: imports only aemp, aemp.lowlevel
and the leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import aemp
from aemp import lowlevel
from aemp._errors import AempError, InvalidArgument, OutOfRange
from aemp._runtime import CURRENT, SELF

__all__ = [
    "CATCHERS",
    "FORWARDERS",
    "LogCatcher",
    "LogEntry",
    "LogForwarder",
    "forward",
    "forwarders",
    "parse_level",
]

log = logging.getLogger("aemp.logcatch")

CATCHERS = "aemp.logcatch"  # db family: catcher port -> {"level": int, "loggers": [str]}
FORWARDERS = "aemp.logsend"  # db family: forwarder port -> None
DEFAULT_BUFFER = 1000  # records a forwarder keeps while no catcher is reachable
DEFAULT_QUEUE = 10_000  # records a catcher keeps for its iterator
MAX_TEXT = 32 * 1024  # characters of a message or exception text that are sent
MAX_CATCHERS = 64  # catchers one forwarder sends to; more are ignored
MAX_LOGGERS = 64  # logger names in one catcher's filter


def parse_level(level: Any) -> int:
    """A logging level: an int >= 0, or a name such as "INFO" or "warning"."""
    if isinstance(level, str):
        text = level.strip()
        if text.isdigit():
            return int(text)
        value = logging.getLevelName(text.upper())
        if isinstance(value, int):
            return value
        raise InvalidArgument(
            f"level must be a logging level such as DEBUG, INFO, WARNING, ERROR or a number "
            f"(got {level!r})"
        )
    if type(level) is not int:
        raise InvalidArgument(f"level must be an int or a level name (got {level!r})")
    if level < 0:
        raise OutOfRange(f"level must be >= 0 (got {level})")
    return level


def _loggers(loggers: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(loggers, str):
        loggers = (loggers,)
    out = tuple(loggers)
    for name in out:
        if not isinstance(name, str):
            raise InvalidArgument(f"loggers must be logger names (got {name!r})")
    if len(out) > MAX_LOGGERS:
        raise OutOfRange(f"loggers: at most {MAX_LOGGERS} names (got {len(out)})")
    return out


def _wants(level: int, loggers: tuple[str, ...], rec_level: int, name: str) -> bool:
    """Whether a filter (level, logger names; none: all) takes a record."""
    if rec_level < level:
        return False
    if not loggers:
        return True
    return any(not p or name == p or name.startswith(p + ".") for p in loggers)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... ({len(text)} characters)"


@dataclasses.dataclass(frozen=True, slots=True)
class LogEntry:
    """One log record of some node, as a catcher gets it."""

    node: str  # the node ID that logged it
    time: float  # when, in seconds since the epoch (that node's clock)
    level: int  # logging.WARNING and friends
    logger: str  # the logger's name
    message: str  # the formatted message
    exc: str | None = None  # the exception's traceback text, if any

    @property
    def levelname(self) -> str:
        return logging.getLevelName(self.level)

    def format(self) -> str:
        """One line as ``aemp log`` prints it (and the exception text after it)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        ms = int(self.time % 1 * 1000)
        line = f"{stamp}.{ms:03d} {self.node} {self.levelname} {self.logger}: {self.message}"
        return line if self.exc is None else f"{line}\n{self.exc}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, data: Any) -> LogEntry | None:
        """The entry a forwarded dict describes; None if it is no log record."""
        if type(data) is not dict:
            return None
        node, when, level = data.get("node"), data.get("time"), data.get("level")
        logger, message, exc = data.get("logger"), data.get("message"), data.get("exc")
        if not (type(node) is str and type(logger) is str and type(message) is str):
            return None
        if type(level) is not int or not 0 <= level <= 1000:
            return None
        if not isinstance(when, int | float) or isinstance(when, bool) or not math.isfinite(when):
            return None
        if exc is not None and type(exc) is not str:
            return None
        return cls(node, float(when), level, logger, message, exc)


# ---------------------------------------------------------------- forwarding


class LogForwarder(logging.Handler):
    """A logging.Handler that sends the records of its process to the catchers
    of the network, in the name of its node. Made by ``forward()``."""

    def __init__(self, node: aemp.Node, level: int = logging.NOTSET, buffer: int = DEFAULT_BUFFER):
        super().__init__(level)
        if type(buffer) is not int or buffer < 1:
            raise OutOfRange(f"forward: buffer must be an int >= 1 (got {buffer!r})")
        self.node = node
        self.buffer = buffer
        self.sent = 0  # records sent (one per catcher it went to)
        self.dropped = 0  # records dropped since the last catcher took what was kept
        self.dropped_total = 0
        self._thread = threading.get_ident()
        self._kept: deque[dict[str, Any]] = deque()
        self._catchers: dict[str, tuple[int, tuple[str, ...]]] = {}  # port -> filter
        self._gone: set[str] = set()  # catchers seen dead, until the database drops them
        self._watches: dict[str, aemp.Monitor] = {}
        self._sending = False
        self._warned = False
        self._logger: logging.Logger | None = None
        self._format = logging.Formatter()
        # records from other threads: a bounded queue, taken by the loop
        self._tlock = threading.Lock()
        self._tqueue: deque[dict[str, Any]] = deque()
        self._tdropped = 0
        self._tscheduled = False
        self.port = node.port()
        self._quiet = {self.port}  # records logged in these ports' context stay here
        self._entry: aemp.DbEntry | None = None
        self._watch: aemp.DbMonitor | None = None
        lowlevel.call_in(node, self.port, self._setup)
        lowlevel.on_close(node, self.close)

    def _setup(self) -> None:
        self._entry = self.node.db_reg(FORWARDERS, self.port)
        self._watch = self.node.db_mon(CATCHERS, self._changed)

    def __repr__(self) -> str:
        return f"<aemp.logcatch.LogForwarder of {self.node.id} to {len(self.catchers)} catchers>"

    @property
    def catchers(self) -> list[str]:
        """The catcher ports records go to now."""
        return [p for p in self._catchers if p not in self._gone]

    @property
    def kept(self) -> int:
        """Records kept while no catcher is reachable."""
        return len(self._kept)

    def attach(self, logger: str = "") -> None:
        self._logger = logging.getLogger(logger)
        self._logger.addHandler(self)

    def close(self) -> None:
        """Stop forwarding: leave the logger, leave the database."""
        if self._logger is not None:
            self._logger.removeHandler(self)
            self._logger = None
        node = self.node
        if not node.closed and not node.loop.is_closed():  # logging.shutdown() calls this too
            for m in self._watches.values():
                m.cancel()
            self._watches.clear()
            if self._watch is not None:
                self._watch.cancel()
            if lowlevel.port_alive(node, self.port):
                node.kil(self.port)
        super().close()

    # ---------------------------------------------------------------- records in

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if name == "aemp.logcatch" or name.startswith("aemp.logcatch."):
            return  # the forwarding path's own records
        if threading.get_ident() != self._thread:
            self._from_thread(record)
            return
        if self._sending or self.node.closed:
            return
        cur = CURRENT.get()
        if cur is not None and cur is not self.node:
            return  # another node's; its own forwarder (if any) has it
        if SELF.get() in self._quiet:
            return
        try:
            item = self._item(record)
        except Exception:
            self.handleError(record)
            return
        self._dispatch(item)

    def _item(self, record: logging.LogRecord) -> dict[str, Any]:
        exc = None
        if record.exc_info:
            exc = self._format.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = (exc + "\n" if exc else "") + record.stack_info
        return {
            "node": self.node.id,
            "time": record.created,
            "level": record.levelno,
            "logger": record.name,
            "message": _clip(record.getMessage()),
            "exc": None if exc is None else _clip(exc),
        }

    def _from_thread(self, record: logging.LogRecord) -> None:
        try:
            item = self._item(record)
        except Exception:
            self.handleError(record)
            return
        with self._tlock:
            if len(self._tqueue) >= self.buffer:
                self._tdropped += 1
                return
            self._tqueue.append(item)
            if self._tscheduled:
                return
            self._tscheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to send to
            self.node.loop.call_soon_threadsafe(self._take_from_threads)

    def _take_from_threads(self) -> None:
        with self._tlock:
            items = list(self._tqueue)
            self._tqueue.clear()
            dropped, self._tdropped = self._tdropped, 0
            self._tscheduled = False
        self.dropped += dropped
        self.dropped_total += dropped
        if not self.node.closed:
            for item in items:
                self._dispatch(item)

    def _dispatch(self, item: dict[str, Any]) -> None:
        sent = False
        level, name = item["level"], item["logger"]
        for port, (want, loggers) in self._catchers.items():
            if port in self._gone:
                continue
            sent = True
            if _wants(want, loggers, level, name):
                self._send(port, ("log", item))
        if not sent:
            self._keep(item)

    def _send(self, port: str, msg: tuple[Any, ...]) -> None:
        self._sending = True
        try:
            self.node.snd(port, *msg)
            if msg[0] == "log":
                self.sent += 1
        except AempError:  # too big for this link (max_packet): counted, not fatal
            self.dropped_total += 1
        finally:
            self._sending = False

    def _keep(self, item: dict[str, Any]) -> None:
        kept = self._kept
        if len(kept) >= self.buffer:
            kept.popleft()
            self.dropped += 1
            self.dropped_total += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "node %s: no log catcher reachable and %d records kept: dropping the "
                    "oldest from now on (counted, and reported to the next catcher)",
                    self.node.id,
                    self.buffer,
                )
        kept.append(item)

    # ---------------------------------------------------------------- catchers

    def _changed(
        self, family: Any, added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        """db_mon of the catchers' family, in the forwarder port's context."""
        for port in deleted:
            self._catchers.pop(port, None)
            self._gone.discard(port)
            self._quiet.discard(port)
            m = self._watches.pop(port, None)
            if m is not None:
                m.cancel()
        new = []
        for port in [*added, *changed]:
            want = self._filter(port, family.get(port))
            if want is None:
                continue
            if port not in self._catchers:
                if len(self._catchers) >= MAX_CATCHERS:
                    continue
                new.append(port)
                if self.node.port_is_local(port):
                    self._quiet.add(port)
                self._watches[port] = self.node.mon(port, lambda *r, p=port: self._lost(p))
            self._catchers[port] = want
        if new:
            self._hand_over(new)

    def _filter(self, port: Any, value: Any) -> tuple[int, tuple[str, ...]] | None:
        """The filter a catcher's entry gives; None for an entry that is no catcher's."""
        if type(port) is not str or "#" not in port:
            return None
        try:
            self.node.port_is_local(port)
        except AempError:
            return None
        if type(value) is not dict:
            return None
        level, loggers = value.get("level", 0), value.get("loggers", [])
        if type(level) is not int or level < 0 or type(loggers) is not list:
            return None
        if len(loggers) > MAX_LOGGERS or not all(type(n) is str for n in loggers):
            return None
        return level, tuple(loggers)

    def _lost(self, port: str) -> None:
        if port in self._catchers:
            self._gone.add(port)

    def _hand_over(self, ports: list[str]) -> None:
        """New catchers: what was kept, what was dropped, then log_sync."""
        items = list(self._kept)
        self._kept.clear()
        dropped, self.dropped = self.dropped, 0
        self._warned = False
        if dropped:
            items.append(
                {
                    "node": self.node.id,
                    "time": time.time(),
                    "level": logging.WARNING,
                    "logger": "aemp.logcatch",
                    "message": f"node {self.node.id} dropped {dropped} log records while no "
                    "catcher was reachable",
                    "exc": None,
                }
            )
        for port in ports:
            want, loggers = self._catchers[port]
            n = 0
            for item in items:
                if _wants(want, loggers, item["level"], item["logger"]):
                    self._send(port, ("log", item))
                    n += 1
            self._send(port, ("log_sync", self.node.id, n, dropped))


def forward(
    level: int | str = logging.NOTSET,
    logger: str = "",
    buffer: int = DEFAULT_BUFFER,
    *,
    node: aemp.Node | None = None,
) -> LogForwarder:
    """Forward the records of `logger` (the root logger: all) at `level` and
    above to the catchers of the network, in the name of `node` (the current
    node), keeping at most `buffer` records while no catcher is reachable.
    One per node: a second call returns the first. Also a service, with
    the arguments in order: ``"services": [["aemp.logcatch:forward",
    "INFO", "", 5000]]``.

    Records must get past the loggers' own levels first (Python's root
    logger lets WARNING and above through unless configured).
    """
    if node is None:
        node = lowlevel.current_node()
    node.check_open()
    lvl = parse_level(level)
    if not isinstance(logger, str):
        raise InvalidArgument(f"forward: logger must be a logger name (got {logger!r})")

    def make() -> LogForwarder:
        fwd = LogForwarder(node, lvl, buffer)
        fwd.attach(logger)
        return fwd

    forwarder: LogForwarder = lowlevel.extension(node, "aemp.logcatch.forward", make)
    return forwarder


async def forwarders(
    node: aemp.Node | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - the database query's own timeout
) -> set[str]:
    """The IDs of the nodes that forward their log now (from the database)."""
    if node is None:
        node = lowlevel.current_node()
    keys = await node.db_keys(FORWARDERS, timeout=timeout)
    return {k.partition("#")[0] for k in keys if isinstance(k, str)}


# ---------------------------------------------------------------- catching


class _Catchers:
    """The live catchers of one node (aemp.lowlevel.extension): a closing node
    fires no monitors, so this ends their iterations."""

    def __init__(self, node: aemp.Node) -> None:
        self.live: set[LogCatcher] = set()
        lowlevel.on_close(node, self.closed)

    def closed(self) -> None:
        for catcher in list(self.live):
            catcher._ended()


class LogCatcher:
    """Catch the log records the network's forwarders send.

    With `cb`, ``cb(entry)`` is called for each LogEntry in the catcher
    port's context (plain or ``async def``: the port takes the next record
    when it ends; an exception kills the port, and so ends the catching).
    Without, iterate: ``async for entry in catcher``. Only records at
    `level` and above, of the `loggers` named (and their children; none:
    all) come; forwarders filter at the source. ``cancel()`` (or leaving
    ``with``/``async with``) stops it.
    """

    def __init__(
        self,
        cb: Callable[[LogEntry], Any] | None = None,
        *,
        level: int | str = logging.NOTSET,
        loggers: Iterable[str] | str = (),
        queue: int = DEFAULT_QUEUE,
        node: aemp.Node | None = None,
    ) -> None:
        if cb is not None and not callable(cb):
            raise InvalidArgument(f"LogCatcher: cb must be callable or None (got {cb!r})")
        if type(queue) is not int or queue < 1:
            raise OutOfRange(f"LogCatcher: queue must be an int >= 1 (got {queue!r})")
        if node is None:
            node = lowlevel.current_node()
        node.check_open()
        self.node = node
        self.level = parse_level(level)
        self.loggers = _loggers(loggers)
        self.queue = queue
        self.garbage = 0  # messages that were no log records, ignored
        self.dropped = 0  # records the iterator's queue had no room for
        self.synced: dict[str, tuple[int, int]] = {}  # node -> (records handed over, dropped)
        self._cb = cb
        self._entries: deque[LogEntry] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._closed = False
        self.port = node.port(self._arrive)
        catchers: _Catchers = lowlevel.extension(node, "aemp.logcatch", lambda: _Catchers(node))
        catchers.live.add(self)
        self._registry = catchers
        value = {"level": self.level, "loggers": list(self.loggers)}
        self._entry = lowlevel.call_in(node, self.port, node.db_reg, CATCHERS, self.port, value)
        lowlevel.call_in(node, self.port, node.mon, self.port, self._ended)

    def __repr__(self) -> str:
        return f"<aemp.logcatch.LogCatcher {self.port}>"

    @property
    def active(self) -> bool:
        return not self._closed

    def _arrive(self, *msg: Any) -> Any:
        tag = msg[0]
        if tag == "log" and len(msg) == 2:
            entry = LogEntry.parse(msg[1])
            if entry is not None:
                if not _wants(self.level, self.loggers, entry.level, entry.logger):
                    return None
                if self._cb is not None:
                    return self._cb(entry)
                entries = self._entries
                if len(entries) >= self.queue:
                    entries.popleft()
                    self.dropped += 1
                entries.append(entry)
                self._wakeup()
                return None
        elif tag == "log_sync" and len(msg) == 4:
            _, node, n, dropped = msg
            if type(node) is str and type(n) is int and type(dropped) is int:
                self.synced[node] = (n, dropped)
                self._wakeup()
                return None
        self.garbage += 1
        if self.garbage == 1:
            log.warning(
                "log catcher %s: ignored a message that is no log record: %.100r "
                "(such messages are counted, this is the only warning)",
                self.port,
                msg,
            )
        return None

    def _wakeup(self) -> None:
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    def _ended(self, *reason: Any) -> None:
        self._closed = True
        self._registry.live.discard(self)
        self._wakeup()

    def cancel(self) -> None:
        """Stop catching (the database entry goes with the port)."""
        if not self._closed and not self.node.closed and lowlevel.port_alive(self.node, self.port):
            self.node.kil(self.port)
        self._ended()

    def __enter__(self) -> LogCatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    async def __aenter__(self) -> LogCatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __aiter__(self) -> LogCatcher:
        return self

    async def __anext__(self) -> LogEntry:
        while not self._entries:
            if self._closed or self.node.closed:
                raise StopAsyncIteration
            await self._wait()
        return self._entries.popleft()

    def take(self) -> list[LogEntry]:
        """The entries waiting for the iterator now, taken."""
        out = list(self._entries)
        self._entries.clear()
        return out

    async def _wait(self) -> None:
        w = self._wake
        if w is None or w.done():
            w = self._wake = self.node.loop.create_future()
        await asyncio.shield(w)  # shared by the iterator and wait_synced

    async def wait_synced(
        self,
        nodes: Iterable[str],
        timeout: float,  # noqa: ASYNC109 - a bound that is no failure: it returns who is missing
    ) -> set[str]:
        """Wait until each of `nodes` has handed over what it kept (log_sync),
        for `timeout` seconds at most; the nodes that did not."""
        missing = set(nodes) - set(self.synced)
        loop = self.node.loop
        deadline = loop.time() + timeout
        while missing and not self._closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wait()
            missing -= set(self.synced)
        return missing
