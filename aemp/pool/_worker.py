# The worker side of a pool: a port that offers functions on the bus
# (aemp/pool/__init__.py says how the two sides work together).
#
# A part of the capability aemp.pool: imports aemp, aemp.lowlevel, the
# leaves, aemp.service and the pool's own parts.

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aemp
from aemp import lowlevel

from .._errors import ERROR_TAG, InvalidArgument, OutOfRange, error_reply
from ..service import PLAIN, answer, answer_error, is_reply_port
from ._names import BUSY_TYPE, check_name, family_of

log = logging.getLogger("aemp.pool")


class Worker:
    """A port that offers functions on the bus; made by offer().

    ``port`` is its ID, ``functions`` the names it offers, ``limit`` the
    jobs it runs at once, ``in_flight`` those running now, ``busy_answers``
    how many requests it answered busy. close() (or killing the port)
    withdraws it.
    """

    def __init__(
        self, node: aemp.Node, functions: dict[str, Callable[..., Any]], limit: int
    ) -> None:
        self.node = node
        self.functions = tuple(functions)
        self.limit = limit
        self.in_flight = 0
        self.busy_answers = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        tags = {name: self._handler(name, fn) for name, fn in functions.items()}
        self.port = node.port(self._unknown, **tags)
        try:
            for name in functions:
                node.db_reg(family_of(name), self.port, {"limit": limit})
        except BaseException:
            node.kil(self.port)
            raise
        node.mon(self.port, self._died)

    def __repr__(self) -> str:
        return (
            f"<aemp.pool.Worker {self.port!r} {list(self.functions)} {self.in_flight}/{self.limit}>"
        )

    def _handler(self, name: str, fn: Callable[..., Any]) -> Callable[..., None]:
        node = self.node

        def job(*msg: Any) -> None:
            reply = msg[-1] if msg else None
            if type(reply) is not str or "#" not in reply:  # is_reply_port, inlined
                log.warning(
                    "worker %s dropped a %r request without a reply port last", self.port, name
                )
                return
            if self.in_flight >= self.limit:
                self.busy_answers += 1
                node.snd(reply, *_busy(name, self.in_flight, self.limit))
                return
            self.in_flight += 1
            try:
                r = fn(*msg[:-1])
            except Exception as e:
                self.in_flight -= 1
                answer_error(node, reply, e)
                return
            self.in_flight -= 1
            if type(r) in PLAIN:  # answer(), inlined: a sync job's answer
                try:
                    node.snd(reply, r)
                except aemp.AempError:
                    answer(node, reply, r)  # sends the error reply, or logs why it cannot
                return
            pending = answer(node, reply, r)
            if pending is not None:  # an awaitable: it runs beside the port
                self.in_flight += 1
                task = lowlevel.spawn_task(node, pending)
                self._tasks.add(task)
                task.add_done_callback(self._job_done)

        return job

    def _job_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1

    def _unknown(self, *msg: Any) -> None:
        if msg and is_reply_port(msg[-1]):
            exc = LookupError(
                f"worker {self.port} offers {', '.join(map(repr, self.functions))}, "
                f"not {msg[0]!r:.80}"
            )
            self.node.snd(msg[-1], *error_reply(exc))
        else:
            log.warning("worker %s dropped a message that is not a request: %.200r", self.port, msg)

    def _died(self, *reason: Any) -> None:
        for task in list(self._tasks):
            task.cancel()

    def close(self) -> None:
        """Withdraw the worker: its port dies, it leaves the database, and the
        jobs still running are cancelled (their callers get PortDead)."""
        if not self.node.closed:
            self.node.kil(self.port)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _busy(function: str, in_flight: int, limit: int) -> tuple[str, str, str, str]:
    return (
        ERROR_TAG,
        BUSY_TYPE,
        f"worker busy: {in_flight} jobs of {function!r} and others in flight (limit {limit})",
        "",
    )


def blocking_job(
    fn: Callable[..., Any], /, *, executor: concurrent.futures.Executor | None = None
) -> Callable[..., Awaitable[Any]]:
    """Wrap a blocking or CPU-bound fn for offer(): each job runs fn(*args)
    with aemp.run_blocking, in a thread of the node's pool (or in
    `executor`, a process pool say), and its result is the answer. (Unlike
    aemp.blocking, whose port callbacks drop the result.)"""
    if not callable(fn):
        raise InvalidArgument(
            f"blocking_job wants a callable (got {fn!r:.60}, a {type(fn).__name__})"
        )

    @functools.wraps(fn)
    async def job(*args: Any) -> Any:
        return await aemp.run_blocking(fn, *args, executor=executor)

    return job


def offer(
    functions: Mapping[str, Callable[..., Any]] | Callable[..., Any],
    /,
    *,
    limit: int = 1,
    node: aemp.Node | None = None,
) -> Worker:
    """Offer functions on the bus: a worker port that answers calls for each
    name, registered in the database family ``fn:NAME``; return the Worker.

    ``functions``: {name: function}, or one function offered under its
    ``__name__``. A function may be plain (runs inline), ``async def`` or
    return an awaitable (runs as a task), or be wrapped in
    ``blocking_job`` (runs in a thread or process). ``limit``: the jobs that may run
    at once; a request beyond it is answered busy at once. ``node``:
    default the current node.
    """
    if callable(functions) and not isinstance(functions, Mapping):
        functions = {getattr(functions, "__name__", ""): functions}
    if not isinstance(functions, Mapping) or not functions:
        raise InvalidArgument(
            "offer wants a function or a non-empty {name: function} mapping "
            f"(got {functions!r:.60})"
        )
    table: dict[str, Callable[..., Any]] = {}
    for name, fn in functions.items():
        check_name(name)
        if not callable(fn):
            raise InvalidArgument(
                f"offer: the function for {name!r} must be callable "
                f"(got {fn!r:.60}, a {type(fn).__name__})"
            )
        table[name] = fn
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgument(
            f"offer: limit must be an int >= 1 (got {limit!r:.40}, a {type(limit).__name__})"
        )
    if limit < 1:
        raise OutOfRange(f"offer: limit must be an int >= 1 (got {limit})")
    return Worker(node if node is not None else lowlevel.current_node(), table, limit)
