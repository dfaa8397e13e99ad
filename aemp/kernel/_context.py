# Port context, the callback-failure policy, async callbacks, and the
# tasks and timers the node owns.
#
# Code runs "in a port's context" with SELF set to that port (and CURRENT
# to this node): the dispatch does it for messages, call_in for everything
# else the kernel calls back (monitors, mon_nodes, timers of after, psub).
# The policy for failures is one: an exception in a callback kills the
# port it ran for with ("die", "Type: text"), logged at INFO if someone
# monitors the port and at WARNING if nobody does; outside any port it is
# logged. A callback that returns an awaitable runs it as a task the node
# owns; for a port's own callback (from the dispatch) the port is BUSY
# meanwhile, its later messages wait in its backlog and are delivered by
# _resume when the task ends, so an actor sees one message at a time.
# close() cancels and awaits every task of the node and cancels its timers.
#
# May import the leaves and, of the kernel, _state.py, _port.py and
# _handles.py.

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .._errors import InvalidArgument, OutOfRange
from .._ids import check_port_id
from .._message import check_message
from .._runtime import CURRENT, SELF
from ._handles import Timer
from ._port import BUSY, DEAD, RESUME, Port
from ._state import Callback, KernelState, check_callback, die_reason

log = logging.getLogger("aemp.node")


class Context(KernelState):
    """Port context, failures, async callbacks, tasks and timers (a part of Kernel)."""

    # ---------------------------------------------------------------- port context

    def call_in(self, owner: str | None, fn: Callback, args: tuple[Any, ...]) -> Any:
        """Call fn(*args) with SELF = owner; an exception kills owner (or is logged)."""
        p = self._ports.get(owner) if owner is not None else None
        t_self = SELF.set(owner if p is not None else None)
        t_node = CURRENT.set(self)
        try:
            r = fn(*args)
            if r is not None:
                return self.callback_result(owner, r)
            return r
        except Exception as e:
            self.callback_failed(owner, fn, e)
            return None
        finally:
            CURRENT.reset(t_node)
            SELF.reset(t_self)

    def callback_result(self, owner: str | None, r: Any) -> Any:
        """What a callback run for owner returned: an awaitable runs as a task."""
        if not inspect.isawaitable(r):
            return r
        task = self.spawn_task(r)  # type: ignore[arg-type]
        task.add_done_callback(lambda t: self._task_failed(owner, t))
        return None

    def callback_failed(self, owner: str | None, fn: Callback, e: Exception) -> None:
        """A callback run for owner raised e: owner dies, or it is logged."""
        p = self._ports.get(owner) if owner is not None else None
        if p is not None:
            self._die(p, e)
        else:
            log.exception("node %s: callback %r raised outside any port", self.id, fn)

    def _task_failed(self, owner: str | None, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        p = self._ports.get(owner) if owner is not None else None
        if p is not None and isinstance(exc, Exception):
            self._die(p, exc)
        else:
            log.error("node %s: task failed outside any port", self.id, exc_info=exc)

    def _die(self, p: Port, exc: Exception) -> None:
        # a crash somebody monitors is handled flow; one nobody watches must be seen
        level = logging.INFO if p.monitors or p.watchers else logging.WARNING
        log.log(level, "port %s died: %s: %s", p.id, type(exc).__name__, exc, exc_info=exc)
        self._kill(p, die_reason(exc))

    def psub(self, fn: Callback) -> Callback:
        """Wrap fn so that it later runs in the context of the current port (SELF).

        An exception kills that port; once the port is dead, calls do nothing.
        """
        check_callback("psub argument", fn)
        owner = SELF.get()

        def in_port_context(*args: Any) -> Any:
            if owner is not None and owner not in self._ports:
                return None
            return self.call_in(owner, fn, args)

        return in_port_context

    def peval(self, port: str, fn: Callback, *args: Any) -> Any:
        """Run fn(*args) now in the context of a local port; return its result.

        An exception kills the port (and peval returns None).
        """
        self._local_port(port, "peval")
        return self.call_in(port, check_callback("peval function", fn), args)

    # ---------------------------------------------------------------- async callbacks

    def _start_async(self, p: Port, awaitable: Any) -> None:
        p.gate = BUSY
        if p.backlog is None:
            p.backlog = deque()
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        p.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._async_done(p, t))

    def _async_done(self, p: Port, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if p.task is task:
            p.task = None
        if task.cancelled() or p.gate is DEAD or self.closed:
            return
        exc = task.exception()
        if isinstance(exc, Exception):
            self._die(p, exc)
        elif exc is not None:  # KeyboardInterrupt and friends are not ours to swallow
            self._kill(p, die_reason(exc))
        else:
            self._queue.append((p, RESUME))
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_soon(self._drain)

    def _resume(self, p: Port) -> None:
        """Deliver a busy port's backlog until it is empty or the port is busy again."""
        backlog = p.backlog
        assert backlog is not None
        token = SELF.set(p.id)
        try:
            while backlog:
                self._backlogged -= 1
                self._deliver(p, backlog.popleft())
                if p.task is not None or p.gate is DEAD:
                    return
            p.gate = None
            p.backlog = None
        finally:
            SELF.reset(token)

    # ---------------------------------------------------------------- tasks and timers

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run an awaitable as a task the node owns (cancelled and awaited by close())."""
        if self.closed:
            if inspect.iscoroutine(coro):
                coro.close()  # never to run: no "was never awaited" warning
            self.check_open()
        task: asyncio.Future[Any] = asyncio.ensure_future(coro, loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def timer(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Call fn() after `delay` seconds on the loop's clock (close() cancels it)."""
        self.check_open()
        timer = Timer(self, delay, fn)
        self._timers.add(timer)
        return timer

    def after(self, seconds: float, target: str | Callback, *msg: Any) -> Timer:
        """After `seconds`, send msg to the port `target`, or call `target()`."""
        self.check_open()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidArgument(f"after: seconds must be a number >= 0 (got {seconds!r})")
        if not seconds >= 0:  # NaN too
            raise OutOfRange(f"after: seconds must be a number >= 0 (got {seconds!r})")
        if callable(target):
            owner = SELF.get()
            return self.timer(seconds, lambda: self.call_in(owner, target, msg))
        check_port_id(target)
        check_message(msg)
        return self.timer(seconds, lambda: self.send(target, msg))
