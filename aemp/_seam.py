# Where the kernel and the network meet: the Protocols each side offers
# the other, and nothing else.
#
# The kernel (ports, run queue, monitors, remote-node state) and the
# network (connections, listeners, dialling, seeds) never import each
# other. The network hands the kernel a Link for every authenticated
# connection and delivers what it reads to the Inbox the kernel gives
# back; the kernel asks the network to connect through a Connector. The
# node (aemp/_node.py) builds both and wires one to the other. A test, or
# aemp.testing, can stand in for either side with anything that has these
# methods: an in-memory link needs no socket. DataStream is how a data
# connection (aemp/net/_stream.py) looks to aemp.lowlevel and the
# capabilities above it, which never import the network.
#
# May import only the leaves (aemp._errors and the standard library).

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, Protocol


class Link(Protocol):
    """One authenticated connection to one remote node, as the network provides it."""

    remote_id: str

    def send(self, packet: list[Any]) -> None:
        """Encode and send [portname, *message] (or a node request, portname "").

        Raises MessageError at once for what this link cannot carry; a
        closed link drops the packet silently (its loss is reported
        through LinkOwner.link_lost).
        """

    def send_message(self, portname: str, msg: tuple[Any, ...]) -> None:
        """send([portname, *msg]) for a non-empty msg: the hot path of snd."""

    def close(self, reason: str) -> None:
        """Close on purpose: what is queued is written first."""

    def fail(self, reason: str) -> None:
        """The link is given up: whatever was not written is dropped, never sent."""

    def pause_reading(self) -> None:
        """Flow control: deliver nothing more to the Inbox until resume_reading.

        The node holds more than it may (queue_limit). The link stops
        reading, so the transport pushes back on the peer, and does not
        take the peer's silence meanwhile for a dead peer (it is our own)."""

    def resume_reading(self) -> None:
        """Deliver again what arrives (and what was read and held back)."""

    def drained(self) -> asyncio.Future[None] | None:
        """None if the link can take more now; else a future resolved when its
        unsent bytes fall under the low-water mark or the link is lost."""


class Inbox(Protocol):
    """Where the packets read from one remote node go."""

    def receive(self, packets: Iterable[list[Any]]) -> None:
        """Packets [portname, *message] from the node, in stream order.

        The node may hold them in its run queue; when it holds too much it
        asks the links that add to it to pause_reading (Link), and later to resume."""


class LinkOwner(Protocol):
    """What the network asks of the node it serves (the kernel and the database)."""

    id: str
    loop: asyncio.AbstractEventLoop

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run a coroutine as a task the node owns (cancelled on close)."""

    def inbox(self, nodeid: str) -> Inbox:
        """Where packets from `nodeid` go, before or after its link is up."""

    def link_up(self, nodeid: str, link: Link) -> None:
        """`link` is now the one connection to `nodeid`; queued packets go out on it."""

    def link_lost(self, nodeid: str, link: Link, reason: str) -> None:
        """`link` broke or was closed; nothing if it is not the node's link."""

    def node_is_up(self, nodeid: str) -> bool:
        """True if `nodeid` has a link (or is this node)."""

    def unreachable(self, nodeid: str, reason: str) -> None:
        """A connect request for `nodeid` ended without a link."""

    def seed_greeted(self, nodeid: str) -> None:
        """A seed address turned out to be node `nodeid` (it may become our master)."""

    def seed_is_self(self) -> None:
        """A seed address leads to this very node (so it is a global node)."""

    def lookup(self, nodeid: str) -> Awaitable[list[str]]:
        """Where `nodeid` listens, as the database knows it ([] if unknown)."""


class Connector(Protocol):
    """What the kernel asks of the network."""

    def connect(self, nodeid: str) -> None:
        """Start connecting to `nodeid`; the outcome comes back as link_up or unreachable."""

    def forget(self, nodeid: str) -> None:
        """Nothing refers to `nodeid` any more: drop what is kept about it."""


class DataStream(Protocol):
    """A data connection in its stream phase: raw bytes both ways, bounded
    buffers, ClosedStreamError after close(), BrokenStreamError when the
    peer or the network broke it (net.RawStream)."""

    peer: str  # the node ID at the other end
    dataconn_id: str
    bytes_in: int  # stream bytes received (before TLS)
    bytes_out: int  # stream bytes sent (before TLS)

    async def read(self, max_bytes: int | None = None) -> bytes:
        """Up to max_bytes (None: one read's worth); b"" at the end of the peer's bytes."""
        ...

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of data, waiting while the stream's bound is unsent."""

    def close(self, abort: bool = False) -> None:
        """End the stream: what was written goes out first, unless abort."""

    async def wait_closed(self, reset_after: float) -> bool:
        """After close(): wait until the written bytes are out and the socket
        closed; reset it after reset_after seconds. True if it closed in time."""
        ...
