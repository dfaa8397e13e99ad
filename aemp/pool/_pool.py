# The callers' side of a pool: Pool follows a function's workers and
# spreads calls over them; PoolCall is one call's life (aemp/pool/__init__.py
# says how).
#
# A part of the capability aemp.pool: imports aemp, aemp.lowlevel, the
# leaves and the pool's own parts.

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

import aemp
from aemp import lowlevel

from .._deadlines import Deadlines
from .._errors import (
    ERROR_TAG,
    CallTimeout,
    InvalidArgument,
    NodeClosed,
    PortDead,
    RemoteError,
)
from .._message import check_message
from .._pending import Pending
from ._names import BUSY_TYPE, AllBusy, BadReply, NoWorkers, PoolClosed, check_name, family_of
from ._results import Results, check_seconds

log = logging.getLogger("aemp.pool")

_SELF = aemp.SELF
BUSY_BACKOFF = 0.005  # seconds a busy worker is skipped, doubling per busy answer ...
MAX_BUSY_BACKOFF = 0.25  # ... up to this: short, as a busy worker is healthy
MAX_BENCH = 30.0  # seconds: the longest a failing worker is left out at a time
# No cap: an int that fits the interpreter's fast int comparison, as the
# counts it is compared with on every call (against a float, math.inf,
# each comparison takes the slow path)
UNCAPPED = (1 << 30) - 1
_NONE: Any = object()  # no value: an empty reply
_monotonic = time.monotonic  # the clock of a call's deadline
_random = random.random
_new = object.__new__


class _W:
    """What a pool knows of one worker."""

    __slots__ = (
        "bench",
        "bench_until",
        "busy",
        "busy_until",
        "calls",
        "cap",
        "flagged",
        "limit",
        "monitor",
        "nodeid",
        "outstanding",
        "port",
        "ready",
    )

    def __init__(self, port: str, limit: int | None, nodeid: str | None) -> None:
        self.port = port
        self.nodeid = nodeid  # its node, None for a worker of the pool's own node
        self.limit = limit
        self.outstanding = 0  # this pool's calls to it not yet answered ...
        self.calls: dict[PoolCall, None] = {}  # ... which are these
        # its death ends them: watched while it is ready or has calls
        self.monitor: aemp.Monitor | None = None
        self.busy_until = 0.0  # skipped until then after a busy answer
        self.busy = BUSY_BACKOFF  # the next busy back-off
        self.bench_until = 0.0  # left out until then after a failure
        self.bench = 0.0  # the last bench time (0: no failure since the last success)
        # after a busy answer, at most `limit` calls go to it until it is idle again
        # (before, calls may queue at it: a sync worker answers one by one)
        self.cap = UNCAPPED
        self.ready = False  # in the pool's list of workers a call may pick
        # True when a reply must look at more than the count: the worker is
        # not ready, or busy, benched or capped (Pool._update keeps it)
        self.flagged = True


def _limit_of(value: Any) -> int | None:
    limit = value.get("limit") if isinstance(value, dict) else None
    return limit if type(limit) is int and limit >= 1 else None


class PoolCall(Pending[Any]):
    """A pending pool.call: await it for the result, or cancel() it.

    Made by Pool.call, which sets every field itself: no __init__ call on
    the way of each call. While an attempt is out, ``_reply`` is its reply
    port, and the call is in its worker's ``calls`` and in a deadline
    bucket of the pool (``_bucket``, None without a timeout); _detach()
    takes it out of all three.
    """

    __slots__ = (
        "_args",
        "_bucket",
        "_deadline",
        "_idempotent",
        "_pool",
        "_reply",
        "_timeout",
        "_timer",
        "_worker",
    )

    _args: tuple[Any, ...]
    _bucket: dict[PoolCall, None] | None
    _deadline: float | None
    _idempotent: bool
    _pool: Pool
    _reply: Any  # the attempt's reply port (lowlevel.reply_ports), None when none is out
    _timeout: float | None
    _timer: aemp.Timer | None
    _worker: _W | None

    def __repr__(self) -> str:
        where = (
            self._worker.port if self._reply is not None and self._worker is not None else "waiting"
        )
        state = "done" if self._done else where
        return f"<aemp.pool.PoolCall {self._pool.function!r} {state}>"

    @property
    def worker(self) -> str | None:
        """The port of the worker the call went to last (None before it went out)."""
        return None if self._worker is None else self._worker.port

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - _monotonic()

    def _on_reply(self, value: Any = _NONE, *more: Any) -> None:
        # A message to the attempt's reply port (SELF is that port): the
        # attempt ends (_detach, inlined: this is every call's way), then
        # the call, unless the message is an error reply or garbage.
        pool = self._pool
        pool._drop(self._reply)
        self._reply = None
        w: _W = self._worker  # type: ignore[assignment]  # set before the attempt went out
        del w.calls[self]
        w.outstanding -= 1
        if self._bucket is not None:
            del self._bucket[self]
        if value.__class__ is str and value == ERROR_TAG:  # as cal reads an error reply
            self._on_error(RemoteError.from_reply(w.port, (value, *more)))
            return
        if more or value is _NONE:  # a reply is [value]
            pool._garbled(self, w, () if value is _NONE else (value, *more))
            return
        if w.flagged:  # else nothing but the count changes, and no call waits
            pool._replied(w)
        self._result = value  # (no wait timer: _wake ended it when the call went out)
        self._done = True  # Pending._settle, inlined
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        cb = self._cb
        if cb is None:
            return
        owner = self._owner
        if owner is not None:  # its checks and context: lowlevel.call_in's
            lowlevel.call_in(pool.node, owner, cb, value)
            return
        _SELF.set(None)  # as a cal's callback: run as the caller, no port here
        try:
            r = cb(value)
        except Exception as e:  # as call_in would: logged, with no port to kill
            lowlevel.call_in(pool.node, None, _Raise(cb, e))
        else:
            if r is not None:  # an awaitable runs as a task
                lowlevel.call_in(pool.node, None, _Return(r))

    __call__ = _on_reply  # the reply port's callback: the call itself, no bound method

    def _detach(self) -> _W:
        """Take the attempt out: its reply port, its worker's calls and count,
        its deadline bucket. Returns the worker."""
        w = self._worker
        assert w is not None and self._reply is not None
        self._pool._drop(self._reply)
        self._reply = None
        del w.calls[self]
        w.outstanding -= 1
        if self._bucket is not None:
            self._bucket.pop(self, None)
            self._bucket = None
        return w

    def _timed_out(self) -> None:
        # the pool's Deadlines: the attempt's bucket ended with the call in it
        if self._reply is not None:
            w = self._detach()
            assert self._timeout is not None
            self._on_error(CallTimeout(w.port, self._timeout))

    def _on_error(self, exc: Exception) -> None:
        """The attempt (detached) ended in exc: go on elsewhere, or end."""
        w = self._worker
        assert w is not None
        pool = self._pool
        if isinstance(exc, RemoteError):
            if exc.type == BUSY_TYPE:
                pool.busy_answers += 1
                w.busy_until = pool._loop.time() + w.busy
                w.busy = min(w.busy * 2, MAX_BUSY_BACKOFF)
                if w.limit is not None:
                    w.cap = w.limit
                pool._update(w)
                pool._dispatch(self)  # the job did not run: always safe elsewhere
            else:
                pool._update(w)  # the worker answered: a free slot
                self._end(exc, None)  # the job ran and failed: never again
        elif isinstance(exc, PortDead):
            pool._bench(w)
            if self._idempotent and not pool.closed:
                pool.moved += 1
                pool._dispatch(self)
            else:
                self._end(exc, None)
        elif isinstance(exc, CallTimeout):
            pool._bench(w)
            self._end(exc, None)
        else:
            pool._update(w)
            self._end(exc, None)
        pool._release(w)
        if pool._waiting:
            pool._wake()

    def _expired(self) -> None:
        self._timer = None
        pool = self._pool
        try:
            pool._waiting.remove(self)
        except ValueError:
            return
        assert self._timeout is not None
        if pool._workers:
            self._end(AllBusy(pool.function, self._timeout, len(pool._workers)), None)
        else:
            self._end(NoWorkers(pool.function, self._timeout), None)

    def _fail(self, exc: BaseException) -> None:
        """End now with exc (cancel(), the pool or its node closed)."""
        if self._done:
            return
        pool = self._pool
        if self._reply is not None:
            w = self._detach()
            if w.flagged:
                pool._update(w)
            pool._release(w)
        else:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                pool._waiting.remove(self)
            except ValueError:
                pass
        self._end(exc, None)
        if pool._waiting:
            pool._wake()

    def _end(self, exc: BaseException | None, value: Any) -> None:
        if self._done:
            return
        self._result = value  # (no wait timer: _wake ended it when the call went out)
        self._settle(exc)
        run = self._callback(exc, (value,))
        if run is not None:
            lowlevel.call_in(self._pool.node, self._owner, run[0], *run[1])


class _Raise:
    """A callback's exception, raised again where lowlevel.call_in handles it
    (shown as the callback)."""

    __slots__ = ("cb", "exc")

    def __init__(self, cb: Callable[..., Any], exc: Exception) -> None:
        self.cb = cb
        self.exc = exc

    def __repr__(self) -> str:
        return repr(self.cb)

    def __call__(self) -> None:
        raise self.exc


class _Return:
    """A callback's result, handed to lowlevel.call_in (an awaitable runs as a task)."""

    __slots__ = ("r",)

    def __init__(self, r: Any) -> None:
        self.r = r

    def __call__(self) -> Any:
        return self.r


class Pool:
    """The callers' side of a function on the bus: follows the workers of
    `function` (database family ``fn:NAME``) and spreads calls over them.

    ``choice``: ``"least"`` (the worker with the fewest of this pool's calls
    outstanding, ties in turn) or ``"two"`` (the better of two random
    workers). ``retry_after``: seconds a worker is left out after it timed
    out, died or answered garbage (doubling per failure, up to 30 s; a
    success forgives). ``node``: default the current node. ``moved``
    counts the idempotent calls sent again after their worker was lost,
    ``busy_answers`` the busy answers the pool got. close() (or
    ``async with``/``with``) stops following; its node's close() does too.
    """

    def __init__(
        self,
        function: str,
        *,
        choice: Literal["least", "two"] = "least",
        retry_after: float = 1.0,
        node: aemp.Node | None = None,
    ) -> None:
        self.function = check_name(function)
        if choice not in ("least", "two"):
            raise InvalidArgument(f"Pool: choice must be 'least' or 'two' (got {choice!r:.40})")
        seconds = check_seconds(retry_after, "Pool: retry_after", none=False)
        assert seconds is not None
        self.choice = choice
        self.retry_after = seconds
        self.node = node if node is not None else lowlevel.current_node()
        self.node.check_open()
        self.closed = False
        self.busy_answers = 0  # busy answers this pool got (each call then went on)
        self.moved = 0  # idempotent calls sent again after their worker was lost
        self._loop = self.node.loop
        # A call's attempt is cal's first half, with no checks (the pool
        # checks a worker's port ID once, when it comes, and a call's timeout
        # and callbacks in call()); the rest of cal is the pool's own: a
        # monitor per worker, not per call, and deadline buckets.
        self._send, self._drop = lowlevel.reply_ports(self.node)
        self._deadlines: Deadlines[PoolCall] = Deadlines(self._later, PoolCall._timed_out)
        self._open = self._deadlines.open
        self._timeout_ok: object = 30.0  # the last timeout (a float) that passed the check
        self._workers: dict[str, _W] = {}
        self._retired: set[_W] = set()  # workers gone from the database, with calls out
        # ports whose own node said they are dead, while the database still
        # lists them: a port ID is never used again, so they get no call
        self._dead: set[str] = set()
        # the workers a call may pick now (not busy, benched or at their cap),
        # in turn order; Pool._update keeps it
        self._ready: list[_W] = []
        self._waiting: collections.deque[PoolCall] = collections.deque()
        self._wake_timer: aemp.Timer | None = None
        self._wake_at = math.inf
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []
        self._by_least = choice == "least"
        _registry(self.node).add(self)
        # outside any port: the monitor must not die with whoever made the pool
        token = aemp.SELF.set(None)
        try:
            self._links = self.node.mon_nodes(self._link_changed)
            self._monitor = self.node.db_mon(family_of(function), self._changed)
        finally:
            aemp.SELF.reset(token)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._workers)} workers"
        return f"<aemp.pool.Pool {self.function!r} {state}>"

    # ------------------------------------------------------------ workers

    @property
    def workers(self) -> list[str]:
        """The ports of the workers the pool knows now, as the database has
        them, less those whose node said they died."""
        return list(self._workers)

    def outstanding(self) -> dict[str, int]:
        """{worker port: this pool's calls to it not yet answered}."""
        return {w.port: w.outstanding for w in self._workers.values()}

    def _changed(
        self, family: Any, added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        if self.closed:
            return
        for key in deleted:
            self._dead.discard(key)
            w = self._workers.pop(key, None)
            if w is not None:
                self._update(w)  # out of the ready list; its calls end as they will
                if w.calls:
                    self._retired.add(w)
                self._release(w)
        for key in (*added, *changed):
            if key in self._dead:
                continue
            limit = _limit_of(family.get(key))
            w = self._workers.get(key)
            if w is not None:
                w.limit = limit
                if w.cap != UNCAPPED:
                    w.cap = UNCAPPED if limit is None else limit
                    self._update(w)
                continue
            try:
                if "#" not in key:
                    raise aemp.InvalidID(key)
                aemp.node_of(key)
            except aemp.InvalidID:
                log.warning(
                    "pool %r: ignoring %r in %r: not a port ID",
                    self.function,
                    key,
                    family_of(self.function),
                )
                continue
            nodeid = aemp.node_of(key)
            w = self._workers[key] = _W(key, limit, None if nodeid == self.node.id else nodeid)
            self._update(w)
        if self._watchers:
            n = len(self._workers)
            for want, fut in [x for x in self._watchers if x[0] <= n]:
                self._watchers.remove((want, fut))
                if not fut.done():
                    fut.set_result(None)
        if self._waiting:
            self._wake()

    async def wait_for_workers(
        self,
        n: int = 1,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - a bound of the wait, raising NoWorkers
    ) -> list[str]:
        """Wait until the pool knows at least n workers; return their ports.

        NoWorkers (a CallTimeout) after `timeout` seconds, naming how many came.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument(f"wait_for_workers: n must be an int >= 1 (got {n!r:.40})")
        check_seconds(timeout, "wait_for_workers: timeout", none=True)
        self._check_open()
        if len(self._workers) < n:
            fut: asyncio.Future[None] = self._loop.create_future()
            entry = (n, fut)
            self._watchers.append(entry)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                assert timeout is not None
                raise NoWorkers(self.function, timeout, len(self._workers), n) from None
            finally:
                if entry in self._watchers:
                    self._watchers.remove(entry)
            self._check_open()
        return self.workers

    # ------------------------------------------------------------ choice

    def _update(self, w: _W) -> None:
        """Put w in the ready list or take it out, as its state says, and
        wake the pool when the first worker left out for a time is due.

        A worker on another node is ready only while that node is connected:
        a call is never sent into a connection that may not come, where its
        loss could not tell "never ran" from "may have run". Until then the
        worker's monitor makes the node connect; if that fails, the monitor
        fires and the worker is benched, to try again after retry_after.
        """
        now = self._loop.time()
        linked = w.nodeid is None or self.node.node_is_up(w.nodeid)
        listed = self._workers.get(w.port) is w
        ok = (
            linked
            and listed
            and w.outstanding < w.cap
            and w.busy_until <= now
            and w.bench_until <= now
            and not self.closed
        )
        if ok != w.ready:
            w.ready = ok
            if ok:
                self._ready.append(w)
                if w.monitor is None:  # a ready worker is watched
                    self._watch(w)
            else:
                self._ready.remove(w)
        w.flagged = not ok or bool(w.busy_until or w.bench) or w.cap != UNCAPPED
        if not ok and not self.closed:
            if listed and not linked and w.monitor is None and w.bench_until <= now:
                self._watch(w)  # the node connects for the monitor
            due = max(w.busy_until, w.bench_until)
            if now < due < self._wake_at:
                self._wake_at_(due, now)

    def _link_changed(self, nodeid: str, up: bool, *reason: Any) -> None:
        """A link came up or was lost: the workers on that node follow."""
        if self.closed:
            return
        for w in list(self._workers.values()):
            if w.nodeid == nodeid:
                self._update(w)
        if up and self._waiting:
            self._wake()

    def _watch(self, w: _W) -> None:
        # outside any port: the monitor must not die with the caller of the moment
        token = _SELF.set(None)
        try:
            w.monitor = self.node.mon(w.port, functools.partial(self._lost, w))
        finally:
            _SELF.reset(token)

    def _lost(self, w: _W, *reason: Any) -> None:
        """w's port died (or its node was lost): its calls fail with PortDead.
        A death its node told of is final; after a lost link, w is benched
        and its node connected again (see _update)."""
        w.monitor = None
        self._retired.discard(w)
        if reason[:1] != ("transport_error",) and self._workers.get(w.port) is w:
            # its node said so (a kil, an exit, no such port): dead for good,
            # though the database may list it a while longer (or for ever,
            # an entry db_set by hand): forgotten until the database drops it
            del self._workers[w.port]
            self._dead.add(w.port)
        self._bench(w)  # (out of the ready list: a ready worker is watched)
        if w.calls:
            exc = PortDead(w.port, reason)
            for call in list(w.calls):
                if call in w.calls:  # else an earlier one's callback ended it
                    call._detach()
                    call._on_error(exc)

    def _release(self, w: _W) -> None:
        """Stop watching w once it has no calls out and has left the pool."""
        if w.calls or w.monitor is None:
            return
        if self.closed or self._workers.get(w.port) is not w:
            w.monitor.cancel()
            w.monitor = None
            self._retired.discard(w)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        lowlevel.timer(self.node, delay, fn)

    def _replied(self, w: _W) -> None:
        """A flagged worker answered a call: it has a free slot (busy ends),
        and a success forgives its failures."""
        if w.busy_until:
            w.busy_until = 0.0
            w.busy = BUSY_BACKOFF
        if not w.outstanding:
            w.cap = UNCAPPED
        w.bench = 0.0
        self._update(w)
        self._release(w)
        if self._waiting:
            self._wake()

    def _garbled(self, call: PoolCall, w: _W, reply: tuple[Any, ...]) -> None:
        """A reply that is not a pool answer: bench the worker, fail the call."""
        if w.busy_until:
            w.busy_until = 0.0
            w.busy = BUSY_BACKOFF
        self._bench(w)
        call._end(BadReply(self.function, w.port, reply), None)
        self._release(w)
        if self._waiting:
            self._wake()

    def _pick(self) -> _W | None:
        """A ready worker for the next call, by the pool's choice, or None.

        Pool.call has this whole body inlined (a call's first choice, where
        a method call costs a twentieth of the pool's share): change both.
        """
        ready = self._ready
        n = len(ready)
        if n < 2:
            return ready[0] if n else None
        if self._by_least:
            w = first = ready[0]
            low = first.outstanding
            for x in ready:
                if x.outstanding < low:
                    w = x
                    low = x.outstanding
            # Ties go to each worker in turn: the first of the least loaded
            # is taken, and when that is the head of the list the list turns
            # by one. A worker further on needs no turn: the one it passed
            # had more calls, and it now has one more itself.
            if w is first:
                ready.append(ready.pop(0))
            return w
        # two different workers, each pair as likely as any other (not
        # random.sample: its checks cost more than the rest of a call's choice)
        i = int(_random() * n)
        j = int(_random() * (n - 1))
        a = ready[i]
        b = ready[j + 1 if j >= i else j]
        return a if a.outstanding <= b.outstanding else b

    def _bench(self, w: _W) -> None:
        """Leave w out after a failure. The failures of one moment count once:
        when a worker dies or stalls, every call outstanding there fails at
        about the same time, and that is one failure, not fifty doublings."""
        now = self._loop.time()
        if w.bench_until > now:
            return  # benched already, for this failure or one before it
        w.bench = min(w.bench * 2, MAX_BENCH) if w.bench else self.retry_after
        w.bench_until = now + w.bench
        self._update(w)

    # ------------------------------------------------------------ calls

    def call(
        self,
        *args: Any,
        timeout: float | None = 30.0,
        idempotent: bool = False,
        cb: Callable[[Any], Any] | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> PoolCall:
        """Call the function on one of the workers: ``await pool.call(*args)``
        gives its result.

        ``timeout`` bounds the whole call, waits and retries included (None:
        no bound). A busy worker's answer sends the call to another worker;
        a worker's death does so only with ``idempotent=True`` (the job may
        have run), else PortDead is raised. The function's exception raises
        RemoteError, never retried. Without workers the call waits for one:
        NoWorkers at the timeout. AllBusy when all stayed busy; CallTimeout
        when the worker did not answer in time; BadReply for an answer that
        is not a pool reply. With ``cb``, the result is passed as ``cb(value)``
        and a failure as ``err(exc)`` (without err a failure kills the
        calling port), as with cal.
        """
        if self.closed:
            raise PoolClosed(f"pool of {self.function!r} is closed")
        if timeout is not self._timeout_ok:  # else the float checked last time
            timeout = self._check_timeout(timeout)
        if cb is not None and not callable(cb):
            raise InvalidArgument(f"pool.call: cb must be callable or None (got {cb!r:.60})")
        if err is not None and not callable(err):
            raise InvalidArgument(f"pool.call: err must be callable or None (got {err!r:.60})")
        call = _new(PoolCall)  # its fields, all of them:
        call._pool = self
        call._args = args
        call._timeout = timeout
        call._deadline = None if timeout is None else _monotonic() + timeout
        call._idempotent = idempotent
        call._cb = cb
        call._err = err
        call._owner = _SELF.get()
        call._done = False
        call._result = None
        call._exc = None
        call._future = None
        call._reply = None
        call._timer = None
        ready = self._ready
        w: _W | None
        n = len(ready)
        if n < 2:
            w = ready[0] if n else None
        elif self._by_least:  # _pick, inlined (its docstring says why)
            w = first = ready[0]
            low = first.outstanding
            for x in ready:
                if x.outstanding < low:
                    w = x
                    low = x.outstanding
            if w is first:  # ties go to each worker in turn (see _pick)
                ready.append(ready.pop(0))
        else:
            i = int(_random() * n)
            j = int(_random() * (n - 1))
            a = ready[i]
            b = ready[j + 1 if j >= i else j]
            w = a if a.outstanding <= b.outstanding else b
        call._worker = w
        if w is None:
            call._bucket = None
            check_message((self.function, *args))  # what cal would check, before it waits
            self._wait(call)
            return call
        # the first attempt (_go, inlined): errors of the message itself
        # reach the caller
        w.outstanding += 1
        w.calls[call] = None
        if timeout is None:
            call._bucket = None
        else:
            bucket = self._open.get(timeout)
            if bucket is None:
                bucket = self._deadlines.bucket(timeout)
            bucket[call] = None
            call._bucket = bucket
        if w.outstanding >= w.cap:
            self._update(w)
        try:
            call._reply = self._send(
                w.port,
                (self.function, args[0]) if len(args) == 1 else (self.function, *args),
                call,
            )
        except BaseException:
            call._reply = None
            self._undo(call, w)
            call._done = True
            raise
        return call

    def _go(self, call: PoolCall, w: _W, timeout: float | None) -> None:
        """Send an attempt of call to w (raises what sending raises, undone)."""
        call._worker = w
        w.outstanding += 1
        w.calls[call] = None
        if timeout is None:
            call._bucket = None
        else:
            bucket = call._bucket = self._deadlines.bucket(timeout)
            bucket[call] = None
        if w.outstanding >= w.cap:
            self._update(w)
        try:
            call._reply = self._send(w.port, (self.function, *call._args), call)
        except BaseException:
            call._reply = None
            self._undo(call, w)
            raise

    def _undo(self, call: PoolCall, w: _W) -> None:
        """What _go did before its send raised."""
        del w.calls[call]
        w.outstanding -= 1
        if call._bucket is not None:
            del call._bucket[call]
            call._bucket = None
        if w.flagged:
            self._update(w)

    def _check_timeout(self, timeout: object) -> float | None:
        seconds = check_seconds(timeout, "pool.call: timeout", none=True)
        if type(timeout) is float:  # the same object next time needs no check
            self._timeout_ok = timeout
        return seconds

    def _dispatch(self, call: PoolCall) -> None:
        """Send a call that went out before (or waited) to a worker, or queue it."""
        if call._done:
            return
        if self.closed:
            call._end(PoolClosed(f"pool of {self.function!r} is closed"), None)
            return
        remaining = call._remaining()
        if remaining is not None and remaining <= 0:
            assert call._timeout is not None
            call._end(AllBusy(self.function, call._timeout, len(self._workers)), None)
            return
        w = self._pick()
        if w is None:
            self._wait(call)
            return
        try:
            self._go(call, w, remaining)
        except Exception as e:
            call._end(e, None)

    def _wait(self, call: PoolCall) -> None:
        self._waiting.append(call)
        remaining = call._remaining()
        if remaining is not None and call._timer is None:
            call._timer = lowlevel.timer(self.node, max(remaining, 0.0), call._expired)

    def _wake_at_(self, at: float, now: float) -> None:
        """Run _woken at `at` (earlier than the wake-up set, if any)."""
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        self._wake_at = at
        self._wake_timer = lowlevel.timer(self.node, at - now, self._woken)

    def _woken(self) -> None:
        """The first worker left out for a time is due: take back every one
        that is, set the next wake-up, and send the waiting calls."""
        self._wake_timer = None
        self._wake_at = math.inf
        for w in list(self._workers.values()):
            if not w.ready:
                self._update(w)
        self._wake()

    def _wake(self) -> None:
        waiting = self._waiting
        while waiting and self._ready:
            call = waiting.popleft()
            if call._timer is not None:  # it bounded the wait; the attempt's bounds the rest
                call._timer.cancel()
                call._timer = None
            self._dispatch(call)

    # ------------------------------------------------------------ fan-out

    def imap_unordered(
        self,
        items: Iterable[Any],
        *,
        star: bool = False,
        concurrency: int = 64,
        timeout: float | None = 30.0,
        idempotent: bool = False,
        progress: Callable[[int, int | None], Any] | None = None,
        return_exceptions: bool = False,
    ) -> Results:
        """Call the function once per item, at most `concurrency` calls
        outstanding; an async iterator of the results as they come.

        Each item is the one argument (a tuple of arguments with
        ``star=True``). ``progress(done, total)`` is called after each
        result (total is None for an iterable without len). The first
        failure (a call's, or progress's exception) cancels the calls still
        outstanding and is raised from the iteration; aclose() cancels them
        too. With ``return_exceptions=True`` a call's failure (RemoteError,
        PortDead, a timeout...) is its result instead, and the rest go on.
        """
        self._check_open()
        return Results(
            self.call,
            self._loop,
            items,
            star,
            concurrency,
            timeout,
            idempotent,
            progress,
            bool(return_exceptions),
        )

    async def map(
        self,
        items: Iterable[Any],
        *,
        star: bool = False,
        concurrency: int = 64,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - each call's own bound, as in call()
        idempotent: bool = False,
        progress: Callable[[int, int | None], Any] | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """The results of calling the function once per item, in the items'
        order (as imap_unordered, which says what the arguments mean)."""
        results = self.imap_unordered(
            items,
            star=star,
            concurrency=concurrency,
            timeout=timeout,
            idempotent=idempotent,
            progress=progress,
            return_exceptions=return_exceptions,
        )
        out: dict[int, Any] = {}
        try:
            async for index, value in results.indexed():
                out[index] = value
        finally:
            await results.aclose()
        return [out[i] for i in range(len(out))]

    # ------------------------------------------------------------ closing

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed(f"pool of {self.function!r} is closed")

    def close(self) -> None:
        """Stop following the workers; waiting calls fail with PoolClosed
        (calls already sent to a worker end as they would)."""
        if self.closed:
            return
        self.closed = True
        self._monitor.cancel()
        self._links.cancel()
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        self._ready.clear()
        for w in self._workers.values():
            w.ready = False
            w.flagged = True  # a reply looks at it: the last one ends its monitor
            self._release(w)
        exc = PoolClosed(f"pool of {self.function!r} is closed")
        while self._waiting:
            self._waiting.popleft()._end(exc, None)
        for _, fut in self._watchers:
            if not fut.done():
                fut.set_result(None)
        self._watchers.clear()

    def _node_closed(self) -> None:
        """The node closes: close, and the calls out fail with NodeClosed
        (as cal's do)."""
        self.close()
        exc = NodeClosed(f"node {self.node.id!r} was closed")
        for w in [*self._workers.values(), *self._retired]:
            for call in list(w.calls):
                call._fail(exc)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Pools:
    """The pools of one node, closed when it closes."""

    def __init__(self, node: aemp.Node) -> None:
        self.pools: weakref.WeakSet[Pool] = weakref.WeakSet()
        lowlevel.on_close(node, self.close)

    def add(self, pool: Pool) -> None:
        self.pools.add(pool)

    def close(self) -> None:
        for pool in list(self.pools):
            pool._node_closed()


def _registry(node: aemp.Node) -> _Pools:
    pools: _Pools = lowlevel.extension(node, "aemp.pool", lambda: _Pools(node))
    return pools
