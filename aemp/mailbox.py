"""aemp.mailbox: selective receive for coroutines.

A port's callbacks take each message as it comes. A coroutine often wants
the opposite: to wait for the next message of one kind ("the reply to my
request", "the next job") while messages of other kinds wait their turn,
as Erlang's receive and Coro::MP's get do. A Mailbox makes a local port
into that: its default callback keeps every message it is given, in
arrival order, and ``await box.receive(tag, ...)`` takes the first kept
message that matches, waiting for one if none does. Tag callbacks set on
the port with rcv still take their tags first; the mailbox keeps what no
tag callback takes.

How. One coroutine owns a mailbox (a second receive while one waits is an
error), so at most one receive waits. An arriving message is appended to
the kept deque; if it matches the waiting receive, the waiter is woken with
the message's index and takes it from there when it runs. The message
stays in the deque until then, so a receive that times out or is
cancelled in the meantime loses nothing: guarantees 1 and 2 (order, no
silent holes) hold for what the port receives, since nothing is dropped
while the port lives. The kept messages count against the node's
queue_limit (aemp.lowlevel.hold, in steps), as a busy port's backlog does, so a
coroutine that falls behind slows the senders down; past the mailbox's own
`limit` (half of queue_limit by default) the port dies with
("mailbox_full", text naming the limit): a clear end instead of memory
growth. When the port dies (kil, its limit, its coroutine's exception, the
end of its coroutine) a waiting receive raises PortDead with the reason,
the kept messages are dropped, and the coroutine started with run() is
cancelled, as killing a port cancels its async callback.

A capability: imports only aemp, aemp.lowlevel and the leaves.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aemp
from aemp import lowlevel
from aemp._errors import AempError, InvalidArgument, NodeClosed, NotLocalPort, OutOfRange, PortDead
from aemp._runtime import SELF

__all__ = ["Mailbox", "MailboxBusy", "ReceiveTimeout", "receiving"]

log = logging.getLogger("aemp.mailbox")

Predicate = Callable[..., Any]
# The kept messages are counted against queue_limit in steps of HOLD_STEP, so
# that hold() is called once per step instead of once per message (it cost
# a fifth of a receive): the count is high by less than two steps, and back
# at zero whenever nothing is kept.
HOLD_STEP = 64

_Want = tuple[tuple[str, ...] | None, Predicate | None]  # tags (None: any), where


class ReceiveTimeout(AempError, TimeoutError):
    """No matching message came within the timeout of a receive.

    ``port`` is the mailbox's port, ``tags`` the tags asked for (empty: any)
    and ``timeout`` the seconds waited.
    """

    def __init__(self, port: str, tags: tuple[str, ...], timeout: float) -> None:
        self.port = port
        self.tags = tags
        self.timeout = timeout
        what = "a message with tag " + " or ".join(map(repr, tags)) if tags else "a message"
        super().__init__(f"{what} did not come to {port!r} within {timeout:g} s")


class MailboxBusy(AempError, RuntimeError):
    """A receive was started while another receive of the same mailbox waits,
    or inside an async callback or init of the mailbox's own port (where it
    would wait for ever), or run() was called twice: one coroutine owns a
    mailbox."""


class _Boxes:
    """The mailboxes of one node (aemp.lowlevel.extension): by port, and closed with it."""

    def __init__(self, node: aemp.Node) -> None:
        self.by_port: dict[str, Mailbox] = {}
        lowlevel.on_close(node, self.closed)

    def closed(self) -> None:
        for box in list(self.by_port.values()):
            box._end(None)


class Mailbox:
    """A local port whose messages a coroutine takes with ``await receive(...)``.

    ``Mailbox()`` makes a new port on the current node; ``Mailbox(port)``
    takes over a live local port (``aemp.SELF.get()`` in a spawned init):
    its default callback becomes the mailbox's, its tag callbacks stay.
    ``limit`` bounds the messages kept (default: half the node's
    queue_limit); one more kills the port with ("mailbox_full", ...).

    Receive from a coroutine started with run() (or @receiving), not from an
    ``async def`` spawn init or rcv callback: while such a callback runs, its
    port is busy and its messages wait in the node, never reaching the box.
    """

    __slots__ = (
        "_boxes",
        "_counted",
        "_kept",
        "_reason",
        "_task",
        "_waiter",
        "_want",
        "limit",
        "node",
        "port",
    )

    def __init__(
        self, port: str | None = None, *, limit: int | None = None, node: aemp.Node | None = None
    ) -> None:
        if node is None:
            node = lowlevel.current_node()
        elif not isinstance(node, aemp.Node):
            raise InvalidArgument(f"Mailbox: node must be an aemp.Node (got {node!r})")
        node.check_open()
        if limit is None:
            limit = max(1, node.config.queue_limit // 2)
        elif type(limit) is not int:
            raise InvalidArgument(f"Mailbox: limit must be an int >= 1 (got {limit!r})")
        elif limit < 1:
            raise OutOfRange(f"Mailbox: limit must be at least 1 message (got {limit})")
        self.node = node
        self.limit = limit
        boxes: _Boxes = lowlevel.extension(node, "aemp.mailbox", lambda: _Boxes(node))
        if port is None:
            port = node.port()
        elif not isinstance(port, str):
            raise InvalidArgument(f"Mailbox: port must be a port ID (got {port!r})")
        elif not node.port_is_local(port) or "#" not in port:
            raise NotLocalPort(f"Mailbox needs a port of node {node.id!r}, got {port!r}")
        elif not lowlevel.port_alive(node, port):
            raise PortDead(port, ("no_such_port", "Mailbox: port is dead or never existed"))
        elif port in boxes.by_port:
            raise InvalidArgument(f"Mailbox: port {port!r} is a mailbox already")
        self.port = port
        self._boxes = boxes
        self._kept: deque[tuple[Any, ...]] = deque()
        self._waiter: asyncio.Future[int] | None = None
        self._want: _Want = (None, None)
        self._reason: tuple[Any, ...] | None = None  # why the port died, once it did
        self._task: asyncio.Future[Any] | None = None
        self._counted = 0  # what lowlevel.hold was told about the kept messages
        node.rcv(port, self._arrive)
        lowlevel.call_in(node, port, node.mon, port, self._died)
        boxes.by_port[port] = self

    def __repr__(self) -> str:
        state = "dead" if self._reason is not None else f"{len(self._kept)} kept"
        return f"<aemp.mailbox.Mailbox {self.port} {state}>"

    def __len__(self) -> int:
        """The messages kept now, not yet received."""
        return len(self._kept)

    @property
    def alive(self) -> bool:
        """True until the port died (or its node closed)."""
        return self._reason is None

    # ---------------------------------------------------------------- arriving

    def _arrive(self, *msg: Any) -> None:
        """The port's default callback: keep the message, wake a receive it matches."""
        kept = self._kept
        kept.append(msg)
        if len(kept) > self._counted:
            self._counted += HOLD_STEP
            lowlevel.hold(self.node, HOLD_STEP)
        if len(kept) > self.limit:
            self.node.kil(
                self.port,
                "mailbox_full",
                f"more than {self.limit} messages kept that no receive took "
                f"(the mailbox's limit; raise it with Mailbox(limit=...))",
            )
            return
        w = self._waiter
        if w is not None and not w.done():
            try:
                hit = self._matches(msg, self._want)
            except Exception as e:  # the receiver's predicate: its error, not the port's
                w.set_exception(e)
                return
            if hit:
                w.set_result(len(kept) - 1)

    @staticmethod
    def _matches(msg: tuple[Any, ...], want: _Want) -> bool:
        tags, where = want
        if tags is not None and msg[0] not in tags:
            return False
        return where is None or bool(where(*msg))

    @staticmethod
    def _find(kept: deque[tuple[Any, ...]], tags: tuple[str, ...], where: Predicate | None) -> int:
        """The index of the first kept message that matches, or -1.

        Tags are compared with == (a tuple, not a set: a message's first
        element may be unhashable); the common cases get loops of their own.
        """
        i = 0
        if where is None:
            if not tags:
                return 0
            if len(tags) == 1:
                tag = tags[0]
                for msg in kept:
                    if msg[0] == tag:
                        return i
                    i += 1
                return -1
            for msg in kept:
                if msg[0] in tags:
                    return i
                i += 1
            return -1
        for msg in kept:
            if (not tags or msg[0] in tags) and where(*msg):
                return i
            i += 1
        return -1

    def _take(self, i: int) -> tuple[Any, ...]:
        kept = self._kept
        if i == 0:
            msg = kept.popleft()
        else:
            msg = kept[i]
            del kept[i]
        n = len(kept)
        if not n:
            lowlevel.hold(self.node, -self._counted)
            self._counted = 0
        elif self._counted - n >= 2 * HOLD_STEP:
            self._counted -= HOLD_STEP
            lowlevel.hold(self.node, -HOLD_STEP)
        return msg

    # ---------------------------------------------------------------- receiving

    async def receive(
        self,
        *tags: str,
        timeout: float | None = None,  # noqa: ASYNC109 - Coro::MP's get has one too
        where: Predicate | None = None,
    ) -> tuple[Any, ...]:
        """The next message with one of `tags` (any tag if none) for which
        ``where(*msg)`` is true (if given), as a tuple; waits for it.

        Messages that do not match stay kept, in order, for later receives.
        Raises ReceiveTimeout after `timeout` seconds (None: no limit; 0:
        only what is kept now); PortDead when the port died (also while
        waiting); NodeClosed when its node closed; MailboxBusy while another
        receive of this mailbox waits; what `where` raises (the message
        stays kept).
        """
        if self._reason is not None:
            raise self._dead()
        if self._waiter is not None:
            raise MailboxBusy(
                f"mailbox {self.port}: a receive waits already (one coroutine owns a mailbox)"
            )
        for t in tags:
            if type(t) is not str:
                raise InvalidArgument(
                    f"receive: tags must be str (got {t!r}, a {type(t).__name__})"
                )
        if where is not None and not callable(where):
            raise InvalidArgument(f"receive: where must be callable or None (got {where!r})")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise InvalidArgument(
                    f"receive: timeout must be a number or None (got {timeout!r})"
                )
            if not timeout >= 0 or math.isinf(timeout):
                raise OutOfRange(f"receive: timeout must be a finite number >= 0 (got {timeout!r})")
        want = (tags or None, where)
        kept = self._kept
        if kept:
            i = self._find(kept, tags, where)
            if i >= 0:
                return self._take(i)
        if timeout == 0:
            raise ReceiveTimeout(self.port, tags, 0)
        if lowlevel.port_task(self.node, self.port) is asyncio.current_task():
            # the port's own async callback or init: the port is busy until
            # this returns, so what is sent to it waits in the node and never
            # reaches the mailbox
            raise MailboxBusy(
                f"mailbox {self.port}: receive inside an async callback or init of the "
                "mailbox's own port would wait for ever (its messages wait until that "
                "returns); receive in a coroutine started with Mailbox.run or @receiving"
            )
        waiter: asyncio.Future[int] = self.node.loop.create_future()
        self._waiter = waiter
        self._want = want
        try:
            if timeout is None:
                i = await waiter
            else:
                try:
                    async with asyncio.timeout(timeout) as cm:
                        i = await waiter
                except TimeoutError:
                    if cm.expired():
                        raise ReceiveTimeout(self.port, tags, timeout) from None
                    raise
        finally:
            self._waiter = None
            self._want = (None, None)
        if self._reason is not None:  # died after the message came, before we ran
            raise self._dead()
        return self._take(i)

    def __aiter__(self) -> Mailbox:
        return self

    async def __anext__(self) -> tuple[Any, ...]:
        """Every message in turn; the iteration ends when the port exits normally."""
        try:
            return await self.receive()
        except PortDead as e:
            if e.reason == () and e.port == self.port:
                raise StopAsyncIteration from None
            raise

    # ---------------------------------------------------------------- the coroutine

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run `coro` as the port's coroutine, a task the node owns, with SELF
        the mailbox's port. When it returns the port exits normally; when it
        raises the port dies with ("die", "Type: text"); when the port dies
        first the task is cancelled. Returns the task."""
        if not inspect.iscoroutine(coro):
            raise InvalidArgument(f"Mailbox.run needs a coroutine (got {coro!r})")
        if self._task is not None:
            coro.close()
            raise MailboxBusy(f"mailbox {self.port} runs a coroutine already")
        if self._reason is not None:
            coro.close()
            raise self._dead()
        started: list[asyncio.Future[Any]] = []
        lowlevel.call_in(self.node, self.port, self._start, coro, started)
        if not started:  # the node closed under us: call_in killed the port
            coro.close()
            raise self._dead() if self._reason is not None else PortDead(self.port, ())
        self._task = started[0]
        return self._task

    def _start(self, coro: Coroutine[Any, Any, Any], started: list[asyncio.Future[Any]]) -> None:
        started.append(lowlevel.spawn_task(self.node, self._main(coro)))  # its context has SELF

    async def _main(self, coro: Coroutine[Any, Any, Any]) -> None:
        node, port = self.node, self.port
        try:
            await coro
        except PortDead as e:
            if e.port == port:
                return  # the port died under a receive: its monitors know why
            self._crashed(e)
        except Exception as e:
            self._crashed(e)
        else:
            if lowlevel.port_alive(node, port):
                node.kil(port)

    def _crashed(self, e: Exception) -> None:
        node, port = self.node, self.port
        info = lowlevel.port_info(node, port)
        if info is None:
            return
        seen = info["monitors"] > 1 or info["watchers"]  # more than our own monitor
        level = logging.INFO if seen else logging.WARNING
        log.log(level, "port %s died: %s: %s", port, type(e).__name__, e, exc_info=e)
        node.kil(port, "die", f"{type(e).__name__}: {e}")

    # ---------------------------------------------------------------- the end

    def _died(self, *reason: Any) -> None:
        self._end(reason)

    def _end(self, reason: tuple[Any, ...] | None) -> None:
        """The port died with reason (None: the node closed)."""
        if self._reason is not None:
            return
        self._reason = reason if reason is not None else ("node_closed",)
        self._boxes.by_port.pop(self.port, None)
        self._kept.clear()
        if self._counted and reason is not None:
            lowlevel.hold(self.node, -self._counted)
        self._counted = 0
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(self._dead())
        t = self._task
        if t is not None and not t.done() and t is not asyncio.current_task():
            t.cancel()

    def _dead(self) -> Exception:
        if self._reason == ("node_closed",) and self.node.closed:
            return NodeClosed(f"node {self.node.id!r} is closed (mailbox {self.port})")
        return PortDead(self.port, self._reason or ())


def receiving(
    fn: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., str]:
    """Make ``async def fn(box, *args)`` into an init function ``init(*args)``.

    Called in a port's context (by spawn, with SELF the new port), init
    makes SELF a Mailbox and runs ``fn(box, *args)`` as its coroutine
    (Mailbox.run); called outside any port, it makes a new port for it.
    Returns the port ID. Mark the result with ``@aemp.spawnable`` so that
    other nodes may spawn it.
    """
    if not inspect.iscoroutinefunction(fn):
        raise InvalidArgument(f"@receiving wants an async def function (got {fn!r})")

    @functools.wraps(fn)
    def init(*args: Any) -> str:
        box = Mailbox(SELF.get())
        box.run(fn(box, *args))
        return box.port

    return init
