# Fan-out for a pool: map and imap_unordered keep at most `concurrency`
# calls outstanding, taking items from the iterable as calls end, so an
# endless iterable is fine; the first failure cancels the rest.
#
# A part of the capability aemp.pool: imports only the leaves. It gets the
# pool's call function, so that it needs no import of _pool.

from __future__ import annotations

import asyncio
import collections
import functools
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from .._errors import InvalidArgument, OutOfRange


class Results:
    """The async iterator of Pool.imap_unordered: results as they come."""

    def __init__(
        self,
        call: Callable[..., Any],
        loop: asyncio.AbstractEventLoop,
        items: Iterable[Any],
        star: bool,
        concurrency: int,
        timeout: float | None,
        idempotent: bool,
        progress: Callable[[int, int | None], Any] | None,
        return_exceptions: bool = False,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgument(f"concurrency must be an int >= 1 (got {concurrency!r:.40})")
        if progress is not None and not callable(progress):
            raise InvalidArgument(f"progress must be callable or None (got {progress!r:.60})")
        self._call = call
        self._loop = loop
        try:
            self.total: int | None = len(items)  # type: ignore[arg-type]
        except TypeError:
            self.total = None
        try:
            self._items = iter(enumerate(items))
        except TypeError:
            raise InvalidArgument(
                f"items must be iterable (got {items!r:.60}, a {type(items).__name__})"
            ) from None
        self._star = star
        self._concurrency = concurrency
        self._timeout = timeout
        self._idempotent = idempotent
        self._progress = progress
        self._return_exceptions = return_exceptions
        self._calls: dict[int, Any] = {}  # index -> its PoolCall
        self._ready: collections.deque[tuple[int, Any]] = collections.deque()
        self._error: BaseException | None = None
        self._exhausted = False
        self._closed = False
        self._wakeup: asyncio.Future[None] | None = None
        self.done = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._values()

    async def _values(self) -> AsyncIterator[Any]:
        try:
            async for _, value in self.indexed():
                yield value
        finally:
            await self.aclose()

    async def __anext__(self) -> Any:
        _, value = await self._next()
        return value

    async def indexed(self) -> AsyncIterator[tuple[int, Any]]:
        """The results as (index of the item, result) pairs, as they come."""
        while True:
            try:
                yield await self._next()
            except StopAsyncIteration:
                return

    async def _next(self) -> tuple[int, Any]:
        self._fill()
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                self._stop()
                raise error
            if self._closed or (self._exhausted and not self._calls):
                raise StopAsyncIteration
            self._wakeup = self._loop.create_future()
            await self._wakeup
            self._fill()
        return self._ready.popleft()

    def _fill(self) -> None:
        while (
            not self._exhausted
            and self._error is None
            and not self._closed
            and len(self._calls) < self._concurrency
        ):
            try:
                index, item = next(self._items)
            except StopIteration:
                self._exhausted = True
                break
            except Exception as e:
                self._exhausted = True
                self._error = e
                break
            try:
                if not self._star:
                    args: tuple[Any, ...] = (item,)
                elif type(item) is tuple or type(item) is list:
                    args = tuple(item)
                else:
                    raise InvalidArgument(
                        f"with star=True, item {index} must be a tuple or list of "
                        f"arguments (got {item!r:.60}, a {type(item).__name__})"
                    )
                self._calls[index] = self._call(
                    *args,
                    timeout=self._timeout,
                    idempotent=self._idempotent,
                    cb=functools.partial(self._got, index),
                    err=functools.partial(self._failed, index),
                )
            except Exception as e:
                self._error = e

    def _got(self, index: int, value: Any) -> None:
        self._calls.pop(index, None)
        self._ready.append((index, value))
        self.done += 1
        if self._progress is not None:
            try:
                self._progress(self.done, self.total)
            except Exception as e:
                if self._error is None:
                    self._error = e
        self._fill()
        self._poke()

    def _failed(self, index: int, exc: Exception) -> None:
        if self._return_exceptions:  # the call's failure is its result
            self._got(index, exc)
            return
        self._calls.pop(index, None)
        if self._error is None:
            self._error = exc
        self._poke()

    def _poke(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)

    def _stop(self) -> None:
        self._exhausted = True
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.cancel()

    async def aclose(self) -> None:
        """Cancel the calls still outstanding; the iteration ends."""
        self._closed = True
        self._stop()
        self._poke()


def check_seconds(value: object, what: str, *, none: bool) -> float | None:
    """value as a float of seconds (> 0 and finite; None too if `none`), else
    InvalidArgument or OutOfRange naming `what` and the value."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(
            f"{what} must be a number of seconds (got {value!r:.40}, a {type(value).__name__})"
        )
    if isinstance(value, int) and value.bit_length() > 64:  # float() would overflow
        raise OutOfRange(f"{what} must be > 0 and finite (got an int of {value.bit_length()} bits)")
    seconds = float(value)
    if not 0 < seconds < math.inf:
        raise OutOfRange(f"{what} must be > 0 and finite (got {value!r})")
    return seconds
