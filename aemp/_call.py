# cal: request/reply on top of ports.
#
# A call makes a temporary reply port, monitors the target and starts a
# timer; the first of reply, death of the target, timeout or cancel() ends
# it, and all three helpers are undone at once (no monitor is left behind,
# unlike AnyEvent::MP, whose callback can fire a second time). The result is
# kept on the object, so awaiting late, awaiting twice or never awaiting all
# behave, and no future ever holds an exception nobody retrieved.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ._errors import CallTimeout, PortDead

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("aemp.node")


class Call:
    """A pending ``cal``: await it for the reply tuple, or cancel() it."""

    __slots__ = (
        "_cb",
        "_done",
        "_err",
        "_exc",
        "_future",
        "_mon",
        "_node",
        "_owner",
        "_reply",
        "_result",
        "_timeout",
        "_timer",
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
    ) -> None:
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
        self._reply = node.port(self._on_reply)
        self._mon = node.mon(port, self._on_death)
        self._timer = (
            node.loop.call_later(timeout, self._on_timeout) if timeout is not None else None
        )
        node._calls.add(self)
        node._send(port, (*msg, self._reply))

    def __repr__(self) -> str:
        return f"<aemp.Call to {self.port!r} {'done' if self._done else 'pending'}>"

    @property
    def reply_port(self) -> str:
        """The temporary port the reply goes to (the last element sent)."""
        return self._reply

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop waiting; a late reply is dropped and awaiting raises CancelledError."""
        if not self._done:
            self._finish(None, asyncio.CancelledError())

    def _on_reply(self, *reply: Any) -> None:
        self._finish(reply, None)

    def _on_death(self, *reason: Any) -> None:
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
        node._calls.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._mon.cancel()
        reply = node._ports.get(self._reply)
        if reply is not None:
            node._kill(reply, ())
        if result is not None:
            self._result = result
        self._exc = exc
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        if self._cb is None or isinstance(exc, asyncio.CancelledError):
            return
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
