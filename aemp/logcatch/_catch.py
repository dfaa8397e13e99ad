# The catching half: LogCatcher, a port registered in the catchers' family
# that checks what it gets (anything that is no log record is counted and
# ignored) and hands the records to a callback or an async iterator.

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import aemp
from aemp import lowlevel
from aemp._errors import InvalidArgument, OutOfRange

from ._entry import CATCHERS, DEFAULT_QUEUE, LogEntry, check_loggers, log, parse_level, wants

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
        self.loggers = check_loggers(loggers)
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
                if not wants(self.level, self.loggers, entry.level, entry.logger):
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
