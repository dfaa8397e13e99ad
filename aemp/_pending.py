# An outcome awaited once, or handed to callbacks once: what a cal and a
# database query have in common.
#
# The result is kept on the object, so awaiting late, awaiting twice or
# never awaiting all behave, and no future ever holds an exception nobody
# retrieved. A leaf: it may import only aemp._errors and the standard
# library.

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import NodeClosed

T = TypeVar("T")


class Pending(Generic[T]):
    """An outcome that is awaited, or handed to cb/err callbacks, once.

    ``T`` is what awaiting it gives: a tuple for a cal, a dict or a list
    for a database query.

    The base of Call and the database's Query. A subclass sets the slots,
    provides _fail(exc) to end without a result, calls _settle() when it
    ends, and runs what _callback() gives, in the caller's context.
    """

    __slots__ = ("_cb", "_done", "_err", "_exc", "_future", "_owner", "_result")
    _cb: Callable[..., Any] | None
    _done: bool
    _err: Callable[[Exception], Any] | None
    _exc: BaseException | None
    _future: asyncio.Future[None] | None
    _owner: str | None
    _result: T

    if TYPE_CHECKING:

        def _fail(self, exc: BaseException) -> None: ...

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop waiting; a late answer is dropped and awaiting raises CancelledError."""
        if not self._done:
            self._fail(asyncio.CancelledError())

    def _settle(self, exc: BaseException | None) -> None:
        """Record the ending (the result is already in _result) and wake an await."""
        self._done = True
        self._exc = exc
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def _callback(
        self, exc: BaseException | None, args: tuple[Any, ...]
    ) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """The callback to run for this ending, with its arguments, if any."""
        if self._cb is None or isinstance(exc, asyncio.CancelledError):
            return None
        if exc is None:
            return self._cb, args
        if self._err is not None:
            return self._err, (exc,)
        if isinstance(exc, Exception) and not isinstance(exc, NodeClosed):
            # no error callback: the failure must not vanish, so it kills the
            # caller (unless the whole node is closing: nobody is left to tell)
            return _raise, (exc,)
        return None

    def __await__(self) -> Generator[Any, None, T]:
        if not self._done:
            future = self._future
            if future is None:
                # awaited from the node's own loop, the only one it runs on
                future = self._future = asyncio.get_running_loop().create_future()
            try:
                yield from future
            except asyncio.CancelledError:
                self.cancel()
                raise
        if self._exc is not None:
            raise self._exc
        return self._result


def _raise(exc: Exception) -> None:
    raise exc
