# cal: request/reply on top of ports.
#
# A call makes a temporary reply port, watches the target and keeps a
# deadline; the first of reply, death of the target, timeout or cancel()
# ends it and undoes its part in all three at once, so nothing of it acts
# later (unlike AnyEvent::MP, whose callback can fire a second time). How
# a result is awaited or handed to callbacks is Pending's (aemp/_pending.py).
#
# Calls are cheap because the helpers are shared, node-wide, in a
# CallTable: the pending calls to one target share one monitor (kept a
# while after the last call to a port on another node ends), and calls
# with the same timeout made within a thousandth of it (at least a
# millisecond) share a deadline bucket and its timers (aemp/_deadlines.py).
#
# A reply whose first element is ERROR_TAG is an error reply (a service
# port's handler raised, docs/protocol.md): the call fails with
# RemoteError instead, as it does on a timeout.

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._deadlines import Deadlines
from ._errors import ERROR_TAG, CallTimeout, PortDead, RemoteError
from ._pending import Pending
from ._runtime import SELF

if TYPE_CHECKING:
    from .kernel import Kernel, Monitor

log = logging.getLogger("aemp.node")


class Call(Pending[tuple[Any, ...]]):
    """A pending ``cal``: await it for the reply tuple, or cancel() it."""

    __slots__ = ("_bucket", "_node", "_reply", "_table", "_target", "_timeout", "port")
    _target: _Target  # set by CallTable.add
    _bucket: dict[Call, None] | None
    _result: tuple[Any, ...]

    def __init__(
        self,
        node: Kernel,
        table: CallTable,
        port: str,
        msg: tuple[Any, ...],
        timeout: float | None,
        cb: Callable[..., Any] | None,
        err: Callable[[Exception], Any] | None,
        owner: str | None,
    ) -> None:
        """Start a call of ``node`` (made by Node.cal, which checked the arguments)."""
        self._node = node
        self._table = table
        self.port = port
        self._cb = cb
        self._err = err
        self._owner = owner
        self._timeout = timeout
        self._done = False
        self._result = ()
        self._exc = None
        self._future = None
        table.add(self, port, timeout)
        try:
            self._reply = node.call_out(port, msg, self._on_reply)
        except BaseException:  # the reply port is gone already; undo the rest
            self._done = True
            table.remove(self)
            raise

    def __repr__(self) -> str:
        return f"<aemp.Call to {self.port!r} {'done' if self._done else 'pending'}>"

    @property
    def reply_port(self) -> str:
        """The temporary port the reply goes to (the last element sent)."""
        return self._reply.id

    def _on_reply(self, *reply: Any) -> None:
        # The common end of a call, with CallTable.remove and Kernel.call_in
        # inlined for the usual case: a callback that returns nothing.
        if self._done:
            return
        if reply and type(reply[0]) is str and reply[0] == ERROR_TAG:  # a service's handler raised
            self._finish(RemoteError.from_reply(self.port, reply))
            return
        self._done = True
        node = self._node
        calls = self._target.calls
        del calls[self]
        if not calls:
            self._table.removed(self)
        elif self._bucket is not None:
            del self._bucket[self]
        node.drop_port(self._reply)
        self._result = reply
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        cb = self._cb
        if cb is not None:
            # The run queue or _receive set SELF to the reply port; the callback
            # runs as the caller. After it, SELF stays the caller's: the reply
            # port is dead, so whoever delivered sets SELF again for the next.
            owner = self._owner
            SELF.set(owner if owner is None or node.port_alive(owner) else None)
            try:
                r = cb(*reply)
            except Exception as e:
                node.callback_failed(owner, cb, e)
            else:
                if r is not None:
                    node.callback_result(owner, r)

    def _on_death(self, reason: tuple[Any, ...]) -> None:
        self._finish(PortDead(self.port, reason))

    def _on_timeout(self) -> None:
        assert self._timeout is not None
        self._finish(CallTimeout(self.port, self._timeout))

    def _fail(self, exc: BaseException) -> None:
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        """End without a reply: exc, or None to undo a call that never went out."""
        if self._done:
            return
        node = self._node
        self._table.remove(self)
        node.drop_port(self._reply)
        self._settle(exc)
        run = self._callback(exc, ()) if exc is not None else None
        if run is not None:
            node.call_in(self._owner, *run)


MAX_IDLE_TARGETS = 256  # remote ports called lately whose monitor we keep


class _Target:
    """The pending calls to one port, and the one monitor they share."""

    __slots__ = ("calls", "local", "monitor", "port", "table")

    def __init__(self, table: CallTable, port: str, local: bool) -> None:
        self.table = table
        self.port = port
        self.local = local
        self.calls: dict[Call, None] = {}
        self.monitor: Monitor | None = None

    def died(self, *reason: Any) -> None:
        table = self.table
        if table._targets.get(self.port) is self:
            del table._targets[self.port]
            table._idle.pop(self.port, None)
        self.monitor = None
        for call in list(self.calls):
            call._on_death(reason)


class CallTable:
    """A node's pending calls, with the monitors and deadlines they share.

    Iterating gives the pending calls (a copy: ending one while iterating
    is fine); its length is their number.
    """

    __slots__ = ("_deadlines", "_idle", "_node", "_open", "_targets")

    def __init__(self, node: Kernel) -> None:
        self._node = node
        self._targets: dict[str, _Target] = {}  # every pending call is in one
        # Targets on other nodes stay a while after their last call ends,
        # monitor and all: the next call to the same server, the common
        # case, then costs no monitor. The oldest go first.
        self._idle: dict[str, None] = {}
        self._deadlines: Deadlines[Call] = Deadlines(node.timer, Call._on_timeout)
        self._open = self._deadlines.open  # timeout -> bucket taking calls

    def __len__(self) -> int:
        return sum(len(target.calls) for target in self._targets.values())

    @property
    def targets(self) -> int:
        """The ports the table watches: targets of pending calls, and idle ones."""
        return len(self._targets)

    def __iter__(self) -> Iterator[Call]:
        return iter([call for target in self._targets.values() for call in target.calls])

    def add(self, call: Call, port: str, timeout: float | None) -> None:
        """Register a new call with its target and its deadline."""
        target = self._targets.get(port)
        if target is None:
            node = self._node
            local = port.partition("#")[0] == node.id
            target = _Target(self, port, local)
            # the target's monitor fires from the run queue, never in here; made
            # first, so that a port ID it refuses leaves nothing registered
            target.monitor = node.mon(port, target.died)
            self._targets[port] = target
            target.calls[call] = None
        else:
            if not target.calls:
                self._idle.pop(port, None)
            target.calls[call] = None
        call._target = target
        if timeout is None:
            call._bucket = None
            return
        bucket = self._open.get(timeout)
        if bucket is None:
            bucket = self._deadlines.bucket(timeout)
        bucket[call] = None
        call._bucket = bucket

    def remove(self, call: Call) -> None:
        target = call._target
        calls = target.calls
        if call in calls:
            del calls[call]
        self.removed(call)

    def removed(self, call: Call) -> None:
        """Clean up after a call that left its target's calls."""
        target = call._target
        if not target.calls and self._targets.get(target.port) is target:
            if target.local:  # a local monitor would show on the port
                self._drop(target)
            else:
                idle = self._idle
                idle[target.port] = None
                if len(idle) > MAX_IDLE_TARGETS:
                    self._drop(self._targets[next(iter(idle))])
        if call._bucket is not None:
            call._bucket.pop(call, None)

    def _drop(self, target: _Target) -> None:
        del self._targets[target.port]
        self._idle.pop(target.port, None)
        if target.monitor is not None:
            target.monitor.cancel()
