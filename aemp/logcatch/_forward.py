# The forwarding half: LogForwarder, the logging.Handler that sends the
# records of its process to the catchers the database lists, what it keeps
# while there is none, and what it never forwards (the package's docstring
# says why). Records of other threads come through a bounded queue.

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

import aemp
from aemp import lowlevel
from aemp._errors import AempError, InvalidArgument, OutOfRange
from aemp._runtime import CURRENT, SELF

from ._entry import (
    CATCHERS,
    DEFAULT_BUFFER,
    FORWARDERS,
    MAX_CATCHERS,
    MAX_LOGGERS,
    clip,
    log,
    parse_level,
    wants,
)

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
            "message": clip(record.getMessage()),
            "exc": None if exc is None else clip(exc),
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
            if wants(want, loggers, level, name):
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
                if wants(want, loggers, item["level"], item["logger"]):
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
