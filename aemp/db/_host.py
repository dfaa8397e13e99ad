# What the database asks of the node it runs on: the Host Protocol, and
# nothing else of the node. The node (aemp/_node.py) provides it; a test
# can stand in with anything that has these members.
#
# May import only the leaves and the standard library.

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Protocol


class HostConfig(Protocol):
    """The configuration values the database reads."""

    @property
    def monitor_timeout(self) -> float: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """The node, as the database sees it."""

    @property
    def id(self) -> str:
        """This node's ID."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def config(self) -> HostConfig: ...

    @property
    def closed(self) -> bool:
        """True once the node was closed."""

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) from the run queue, in FIFO order with the messages."""

    def call_in(self, owner: str | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Call fn(*args) in the context of port `owner` (its failure kills the port)."""

    def port_alive(self, port: str) -> bool:
        """True while the local port `port` exists."""

    def mon(self, port: str, cb: Callable[..., Any]) -> Cancellable:
        """Call cb(*reason) when `port` dies; the handle's cancel() stops that."""

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run a coroutine as a task the node owns (cancelled on close)."""

    def handle(self, tag: str, fn: Callable[..., None]) -> None:
        """Node request `tag` is fn(sender, *args) from now on; sender is the
        node ID of the link it came in on, None for this node's own code."""

    def request(self, nodeid: str, tag: str, *args: Any) -> None:
        """Send node request [tag, *args] to node `nodeid`, connecting if need be."""

    def connect(self, nodeid: str) -> None:
        """Start connecting to `nodeid` unless a link or an attempt is there."""

    def node_is_up(self, nodeid: str) -> bool:
        """True if `nodeid` has a link (or is this node)."""

    def up_nodes(self) -> list[str]:
        """The IDs of the nodes with a link now."""

    def seed_ids(self) -> Collection[str] | None:
        """The node IDs the seed addresses turned out to be ("" for a seed not
        yet greeted); None while the node has no network at all."""
