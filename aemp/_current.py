# Which node a module-level call acts on, and how a program is run.
#
# The current node is the node whose port callback is running (the context
# variable CURRENT, set by the node while it delivers), else the node that
# configure() made the process's node, else an anonymous private node that
# is made on first use for the running event loop. That last registry is
# the only module-level mutable state aemp keeps.

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._errors import NoCurrentNode
from ._node import Node
from ._runtime import CURRENT

T = TypeVar("T")

_process_node: Node | None = None


def current_node() -> Node:
    """The node module-level calls act on (see the comment at the top)."""
    node: Node | None = CURRENT.get()
    if node is not None:
        return node
    node = _process_node
    # an implicit node belongs to the loop it was made for; a later
    # asyncio.run() gets a fresh one instead of a node on a dead loop
    if node is not None and not node.closed and (not node.implicit or node.loop is _running_loop()):
        return node
    return _implicit_node()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _implicit_node() -> Node:
    global _process_node
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise NoCurrentNode(
            "no current node: call this from code running in an event loop "
            "(aemp.run(main()) or asyncio.run(main())), or use a Node's methods"
        ) from None
    _process_node = Node(_implicit=True)
    return _process_node


def set_process_node(node: Node | None) -> None:
    global _process_node
    _process_node = node
    if node is not None:
        node.on_close(lambda: _forget(node))


def _forget(node: Node) -> None:
    global _process_node
    if _process_node is node:
        _process_node = None


def process_node() -> Node | None:
    return _process_node


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run a coroutine to completion like asyncio.run, on uvloop when it is installed."""
    factory = None
    if sys.platform != "win32":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency
            factory = None
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)
