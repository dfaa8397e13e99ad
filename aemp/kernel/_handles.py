# Handles for things that can be undone: monitors, timers and (later) the
# database registrations. Python has no "void context", so a call that can
# be undone always returns a handle; dropping it undoes nothing, cancel()
# or leaving a `with` block undoes it. cancel() is idempotent.

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class HandleOwner(Protocol):
    """What a handle asks of its kernel (aemp/kernel/_state.py's KernelState
    has it): declared here, so that this module imports no other part."""

    loop: asyncio.AbstractEventLoop
    _timers: set[Timer]
    _node_watchers: dict[NodeWatch, None]

    def _unmonitor(self, m: Monitor) -> None: ...

    def call_in(self, owner: str | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any: ...

    def kil(self, port: str, *reason: Any) -> None: ...

    def snd(self, port: str, *msg: Any) -> None: ...


class Handle(abc.ABC):
    """Something that can be undone with cancel(); also a context manager."""

    __slots__ = ("_active",)

    def __init__(self) -> None:
        self._active = True

    @property
    def active(self) -> bool:
        """True until cancel() is called or the handle has done its job."""
        return self._active

    def cancel(self) -> None:
        """Undo the registration; does nothing when already undone or fired."""
        if self._active:
            self._active = False
            self._undo()

    @abc.abstractmethod
    def _undo(self) -> None:
        """What cancel() undoes, called at most once."""

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# what a monitor does when its port dies
MON_CALL = 0  # call a callback with the reason
MON_KILL = 1  # kill a port with the reason, on abnormal death only
MON_SEND = 2  # send a message followed by the reason


class Monitor(Handle):
    """A one-shot monitor on a port, returned by ``mon`` and ``mon_guard``."""

    __slots__ = ("_action", "_args", "_node", "_owner", "port")

    def __init__(
        self, node: HandleOwner, port: str, action: int, args: tuple[Any, ...], owner: str | None
    ) -> None:
        super().__init__()
        self._node = node
        self.port = port
        self._action = action
        self._args = args
        self._owner = owner

    def _undo(self) -> None:
        self._node._unmonitor(self)

    def _fire(self, reason: tuple[Any, ...]) -> None:
        if not self._active:
            return
        self._active = False
        node, args = self._node, self._args
        if self._action == MON_CALL:
            node.call_in(self._owner, args[0], reason)
        elif self._action == MON_KILL:
            if reason:
                node.kil(args[0], *reason)
        else:
            node.snd(args[0], *args[1:], *reason)

    def __repr__(self) -> str:
        state = "active" if self._active else "done"
        return f"<aemp.Monitor on {self.port!r} {state}>"


class Timer(Handle):
    """A pending ``after``: cancel() stops it before it fires."""

    __slots__ = ("_handle", "_node")

    def __init__(self, node: HandleOwner, delay: float, fn: Callable[[], None]) -> None:
        super().__init__()
        self._node = node
        self._handle: asyncio.TimerHandle = node.loop.call_later(delay, self._run, fn)

    def _run(self, fn: Callable[[], None]) -> None:
        self._active = False
        self._node._timers.discard(self)
        fn()

    def _undo(self) -> None:
        self._handle.cancel()
        self._node._timers.discard(self)


class NodeWatch(Handle):
    """A ``mon_nodes`` registration: cancel() stops the calls."""

    __slots__ = ("_cb", "_node", "_owner")

    def __init__(self, node: HandleOwner, cb: Callable[..., Any], owner: str | None) -> None:
        super().__init__()
        self._node = node
        self._cb = cb
        self._owner = owner

    def _notify(self, nodeid: str, up: bool, reason: tuple[Any, ...]) -> None:
        if self._active:
            self._node.call_in(self._owner, self._cb, (nodeid, up, *reason))

    def _undo(self) -> None:
        self._node._node_watchers.pop(self, None)
