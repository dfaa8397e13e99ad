# Blocking and CPU-bound work from a port, without stopping the node.
#
# A port's callback runs on the event loop: while it blocks, nothing else
# of the node runs, heartbeats included, and after monitor_timeout every
# peer declares the node dead. run_blocking(fn, *args) runs fn in a thread
# of the node's own pool (or in an executor the caller gives, such as a
# process pool) and returns an asyncio future; blocking(fn) wraps fn into
# an `async def` callback that awaits it. The rules of a port therefore
# hold unchanged, because they are those of any async callback (the
# kernel's, aemp/kernel/_context.py): the port is busy while the work
# runs, its later messages wait in its backlog, an exception kills it
# with ("die", "Type: text"), and close() cancels the task that waits.
#
# The pool belongs to its node (lowlevel.extension), is made on first use
# with `blocking_threads` threads, and is shut down when the node closes:
# work not yet started is cancelled; work already running in a thread
# cannot be stopped by Python, runs to its end, and its result is dropped.
# When every thread is busy, new work waits in the pool's FIFO queue; a
# port submits one job at a time, so ports alone queue at most one job
# each. A thread is not given the port's context: fn must not call aemp
# (a node is not thread-safe), it returns its result instead.
#
# May import the layers below and aemp.lowlevel (the faces layer).

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import lowlevel
from ._current import current_node
from ._errors import InvalidArgument
from ._runtime import CURRENT
from .kernel import check_callback

if TYPE_CHECKING:
    from ._node import Node

EXTENSION = "aemp.blocking"  # the pool's name in lowlevel.extension


def _make_pool(node: Node) -> concurrent.futures.ThreadPoolExecutor:
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=node.config.blocking_threads, thread_name_prefix=f"aemp-blocking {node.id}"
    )
    # work not yet started is dropped; a running thread ends by itself
    lowlevel.on_close(node, lambda: pool.shutdown(wait=False, cancel_futures=True))
    return pool


def _check_executor(executor: object) -> concurrent.futures.Executor | None:
    if executor is None or isinstance(executor, concurrent.futures.Executor):
        return executor
    raise InvalidArgument(
        "executor must be a concurrent.futures.Executor or None "
        f"(got {executor!r}, a {type(executor).__name__})"
    )


def run_blocking(
    fn: Callable[..., Any], /, *args: Any, executor: concurrent.futures.Executor | None = None
) -> asyncio.Future[Any]:
    """Run fn(*args) in a thread of the current node's pool (or in `executor`);
    return a future of its result, to await from an ``async def`` callback.

    fn runs outside the event loop: heartbeats and other ports go on. It
    must not call aemp (return the result instead). Raises InvalidArgument
    if fn is not callable or executor not a concurrent.futures.Executor;
    NodeClosed on a closed node.
    """
    check_callback("run_blocking function", fn)
    pool = _check_executor(executor)
    node = CURRENT.get() or current_node()
    if pool is None:
        pool = lowlevel.extension(node, EXTENSION, lambda: _make_pool(node))
    node.check_open()
    return node.loop.run_in_executor(pool, fn, *args)


def blocking(
    fn: Callable[..., Any], /, *, executor: concurrent.futures.Executor | None = None
) -> Callable[..., Awaitable[None]]:
    """Wrap fn into a port callback that runs fn(*args) with run_blocking.

    ``aemp.port(resize=aemp.blocking(resize_image))``: the port takes its
    next message when fn has returned; fn's result is dropped (to answer,
    write an ``async def`` callback that awaits run_blocking and sends it);
    an exception kills the port with ("die", "Type: text").
    """
    check_callback("blocking function", fn)
    pool = _check_executor(executor)

    @functools.wraps(fn)
    async def in_thread(*args: Any) -> None:
        await run_blocking(fn, *args, executor=pool)

    return in_thread
