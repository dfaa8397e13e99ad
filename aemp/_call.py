# cal: request/reply on top of ports.
#
# A call makes a temporary reply port, watches the target and keeps a
# deadline; the first of reply, death of the target, timeout or cancel()
# ends it, and all three helpers are undone at once (no monitor is left
# behind, unlike AnyEvent::MP, whose callback can fire a second time). The
# result is kept on the object, so awaiting late, awaiting twice or never
# awaiting all behave, and no future ever holds an exception nobody
# retrieved.
#
# Calls are cheap because the helpers are shared, node-wide, in a
# CallTable: the pending calls to one target share one monitor, and the
# deadlines are grouped into buckets a thousandth of the timeout wide
# (at least a millisecond), with one event-loop timer for the earliest
# bucket. A call ends at the end of its bucket: never early, and late by
# at most 0.1% of its timeout.

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import CallTimeout, PortDead
from ._handles import Monitor, Timer

if TYPE_CHECKING:
    from ._node import Node, _Port

log = logging.getLogger("aemp.node")


class Call:
    """A pending ``cal``: await it for the reply tuple, or cancel() it."""

    __slots__ = (
        "_cb",
        "_done",
        "_due",
        "_err",
        "_exc",
        "_future",
        "_node",
        "_owner",
        "_port",
        "_result",
        "_timeout",
        "port",
    )

    def __init__(
        self,
        node: Node,
        port: str,
        msg: tuple[Any, ...],
        timeout: float | None,
        cb: Callable[..., Any] | None,
        err: Callable[[Exception], Any] | None,
        owner: str | None,
        reply: _Port,
    ) -> None:
        """Start a call with ``reply``, a new port of ``node`` (made by Node.cal)."""
        self._node = node
        self.port = port
        self._cb = cb
        self._err = err
        self._owner = owner
        self._timeout = timeout
        self._done = False
        self._result: tuple[Any, ...] = ()
        self._exc: BaseException | None = None
        self._future: asyncio.Future[None] | None = None
        self._port = reply
        reply.default = self._on_reply
        self._due = node._calls.add(self, port, timeout)
        try:
            node._send(port, (*msg, reply.id))
        except BaseException:
            self._finish(None, None)  # undo everything, quietly
            raise

    def __repr__(self) -> str:
        return f"<aemp.Call to {self.port!r} {'done' if self._done else 'pending'}>"

    @property
    def reply_port(self) -> str:
        """The temporary port the reply goes to (the last element sent)."""
        return self._port.id

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop waiting; a late reply is dropped and awaiting raises CancelledError."""
        if not self._done:
            self._finish(None, asyncio.CancelledError())

    def _on_reply(self, *reply: Any) -> None:
        self._finish(reply, None)

    def _on_death(self, reason: tuple[Any, ...]) -> None:
        self._finish(None, PortDead(self.port, reason))

    def _on_timeout(self) -> None:
        assert self._timeout is not None
        self._finish(None, CallTimeout(self.port, self._timeout))

    def _fail(self, exc: BaseException) -> None:
        self._finish(None, exc)

    def _finish(self, result: tuple[Any, ...] | None, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        node = self._node
        node._calls.remove(self, self.port, self._due)
        node._kill(self._port, ())
        if result is not None:
            self._result = result
        self._exc = exc
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        if self._cb is None or isinstance(exc, asyncio.CancelledError):
            return
        if exc is None and result is None:
            return  # undone quietly: the send raised in the constructor
        if exc is None:
            node._call_in(self._owner, self._cb, self._result)
        elif self._err is not None:
            node._call_in(self._owner, self._err, (exc,))
        elif isinstance(exc, Exception):
            # no error callback: the failure must not vanish, so it kills the caller
            node._call_in(self._owner, _raise, (exc,))

    async def _wait(self) -> tuple[Any, ...]:
        if not self._done:
            if self._future is None:
                self._future = self._node.loop.create_future()
            try:
                await self._future
            except asyncio.CancelledError:
                self.cancel()
                raise
        if self._exc is not None:
            raise self._exc
        return self._result

    def __await__(self) -> Generator[Any, None, tuple[Any, ...]]:
        return self._wait().__await__()


def _raise(exc: Exception) -> None:
    raise exc


class _Target:
    """The pending calls to one port, and the one monitor they share."""

    __slots__ = ("calls", "monitor", "port", "table")

    def __init__(self, table: CallTable, port: str) -> None:
        self.table = table
        self.port = port
        self.calls: dict[Call, None] = {}
        self.monitor: Monitor | None = None

    def died(self, *reason: Any) -> None:
        if self.table._targets.get(self.port) is self:
            del self.table._targets[self.port]
        self.monitor = None
        for call in list(self.calls):
            call._on_death(reason)


class CallTable:
    """A node's pending calls, with the monitors and deadlines they share.

    Iterating gives the pending calls (a copy: ending one while iterating
    is fine); its length is their number.
    """

    __slots__ = ("_buckets", "_dues", "_live", "_node", "_targets", "_timer", "_timer_due")

    def __init__(self, node: Node) -> None:
        self._node = node
        self._live: dict[Call, None] = {}
        self._targets: dict[str, _Target] = {}
        self._buckets: dict[float, dict[Call, None]] = {}  # due time -> calls
        self._dues: list[float] = []  # heap of the buckets' due times
        self._timer: Timer | None = None  # for the earliest due time
        self._timer_due = math.inf

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._live))

    def add(self, call: Call, port: str, timeout: float | None) -> float:
        """Register a new call; returns its due time (inf without a timeout)."""
        self._live[call] = None
        target = self._targets.get(port)
        if target is None:
            target = self._targets[port] = _Target(self, port)
            target.calls[call] = None
            # the target's monitor fires from the run queue, never in here
            target.monitor = self._node.mon(port, target.died)
        else:
            target.calls[call] = None
        if timeout is None:
            return math.inf
        loop = self._node.loop
        res = timeout / 1000 if timeout > 1.0 else 0.001
        due = math.ceil((loop.time() + timeout) / res) * res
        bucket = self._buckets.get(due)
        if bucket is None:
            bucket = self._buckets[due] = {}
            heapq.heappush(self._dues, due)
            if due < self._timer_due:
                self._arm(due)
        bucket[call] = None
        return due

    def remove(self, call: Call, port: str, due: float) -> None:
        del self._live[call]
        target = self._targets.get(port)
        if target is not None and call in target.calls:
            del target.calls[call]
            if not target.calls:
                del self._targets[port]
                if target.monitor is not None:
                    target.monitor.cancel()
        if due != math.inf:
            bucket = self._buckets.get(due)
            if bucket is not None:
                bucket.pop(call, None)
            # an empty bucket stays until its time: its timer is shared

    def _arm(self, due: float) -> None:
        node = self._node
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = timer = Timer(node, max(0.0, due - node.loop.time()), self._expire)
        node._timers.add(timer)

    def _expire(self) -> None:
        now_due = self._timer_due
        self._timer = None
        self._timer_due = math.inf
        dues, buckets = self._dues, self._buckets
        expired: list[Call] = []
        while dues and dues[0] <= now_due:
            bucket = buckets.pop(heapq.heappop(dues), None)
            if bucket:
                expired.extend(bucket)
        if dues and not self._node.closed:
            self._arm(dues[0])
        for call in expired:
            call._on_timeout()
