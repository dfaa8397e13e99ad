# Tools for testing code that uses aemp: nodes linked in memory, a loop
# whose clock is virtual, and a bounded wait for a condition.
#
# An in-memory link stands where the network would (aemp/_seam.py): each
# side gets a Link (a MemoryEnd) announced to its node with link_up, and
# what one side sends is encoded by the real wire encoder, carried as
# bytes, decoded by the real decoder and handed to the other node's inbox,
# a loop turn (or `delay` seconds) later, in order. A message that could
# not cross the wire fails in the sender's snd the same way. A link can
# lose packets (drop), go silent (partition: its heartbeats stop too, so
# each side gives up after its monitor_timeout, as over TCP) or be cut
# (both sides see the link lost at once, as a broken TCP connection).
#
# The virtual-time loop is asyncio's selector loop whose clock stands
# still while there is work and jumps to the next timer when there is
# none, so 30 s of heartbeats and timeouts pass in milliseconds. Every
# timer of aemp is on the loop's clock, which makes this possible; sockets
# are not (real I/O takes real time), so do not mix them with virtual time.
#
# The hooks at the end let a test observe or break what users cannot: the
# live connection to a node (to cut it, or to write raw bytes on it), the
# node's network, the next names of its counters, a monitor under a name
# the API refuses. They use the public methods of the node, the kernel and
# the network, never their private names, so aemp's own tests need none.
#
# A public face: it may use the node, the seam, the network and the wire;
# nothing below imports it. docs/testing.md documents it.

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import selectors
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from . import wire
from ._errors import RemoteProtocolError
from ._node import Node
from ._seam import Inbox, LinkOwner

if TYPE_CHECKING:
    from ._node import Network  # the node's network, as _node (the one module that knows it) has it
    from .kernel import Monitor

__all__ = [
    "MemoryEnd",
    "MemoryLink",
    "Mesh",
    "VirtualTimeLoop",
    "connection",
    "cut_link",
    "link",
    "mesh",
    "monitor_raw",
    "network",
    "pair",
    "run",
    "take_names",
    "wait_until",
]

T = TypeVar("T")

Packet = list[Any]


# ---------------------------------------------------------------- in-memory links


class MemoryEnd:
    """One side of a MemoryLink: the Link its node sends on (aemp/_seam.py)."""

    def __init__(
        self, pipe: MemoryLink, owner: LinkOwner, remote_id: str, monitor_timeout: float
    ) -> None:
        self.pipe = pipe
        self.owner = owner
        self.remote_id = remote_id
        self.peer: MemoryEnd | None = None  # set by MemoryLink
        self.closed = False
        self.why = ""  # why it closed
        self._peer_sees = ""  # what the peer's side hears when it learns of our end
        self.packets_out = self.bytes_out = self.packets_in = self.bytes_in = 0
        self._monitor_timeout = monitor_timeout
        self._encoder = wire.make_encoder(pipe.framing, pipe.max_packet)
        self._decoder = wire.make_decoder(pipe.framing, pipe.max_packet)
        self._inbox: Inbox | None = None
        # sent, not yet delivered: (loop time it arrives, bytes), in order
        self._in_flight: deque[tuple[float, bytes]] = deque()
        self._delivery: asyncio.TimerHandle | None = None
        loop = owner.loop
        self._loop = loop
        self._last_in = self._last_out = loop.time()
        self._hb_timer: asyncio.TimerHandle | None = None
        self._paused = False  # the node asked us to deliver nothing (its queue_limit)

    def __repr__(self) -> str:
        state = f"closed: {self.why}" if self.closed else "open"
        return f"<MemoryEnd {self.owner.id!r} -> {self.remote_id!r} {state}>"

    # -- Link ------------------------------------------------------------

    def send(self, packet: list[Any]) -> None:
        """Encode now (a MessageError raises here) and carry to the peer."""
        if self.closed:
            return
        self._carry(self._encoder.encode(packet), packet)

    def send_message(self, portname: str, msg: tuple[Any, ...]) -> None:
        """send([portname, *msg])."""
        if self.closed:
            return
        self._carry(self._encoder.encode_message(portname, msg), [portname, *msg])

    def close(self, reason: str) -> None:
        """Close on purpose: what is in flight arrives, then the peer sees the link lost."""
        if self.closed:
            return
        self._close(reason)
        self.owner.link_lost(self.remote_id, self, reason)

    def _close(self, reason: str) -> None:
        # close() without telling our own node (also the way of a node that closes)
        self._shutdown(reason, keep_in_flight=True)
        self._peer_sees = "Unexpected end-of-file"
        peer = self.peer
        if peer is not None:
            flight = peer._in_flight  # what we sent arrives first, then the end
            arrives = flight[-1][0] if flight else self._loop.time()
            self._loop.call_at(arrives, peer._broken, self._peer_sees, True)

    def fail(self, reason: str) -> None:
        """Give up: what was not delivered either way is dropped; the peer sees the link lost."""
        if self.closed:
            return
        self._shutdown(reason)
        self._peer_sees = "Connection reset by peer"
        self.owner.link_lost(self.remote_id, self, reason)
        peer = self.peer
        if peer is not None:
            self._loop.call_soon(peer._broken, self._peer_sees)

    def pause_reading(self) -> None:
        """Deliver nothing until resume_reading: what arrives stays in flight."""
        self._paused = True

    def resume_reading(self) -> None:
        """Deliver again, starting with what arrived meanwhile."""
        if not self._paused:
            return
        self._paused = False
        self._last_in = self._loop.time()  # the silence was our own
        if self._in_flight and self._delivery is None and not self.closed:
            self._delivery = self._loop.call_at(self._loop.time(), self._deliver)

    def drained(self) -> asyncio.Future[None] | None:
        """None: a memory link has no send buffer to wait for."""
        return None

    # -- carrying ----------------------------------------------------------

    def _carry(self, data: bytes, packet: Packet) -> None:
        self.packets_out += 1
        self.bytes_out += len(data)
        self._last_out = self._loop.time()
        peer = self.peer
        pipe = self.pipe
        if peer is None or peer.closed or pipe.silent:
            return
        if pipe.drop is not None and pipe.drop(self.owner.id, packet):
            return
        now = self._loop.time()
        flight = peer._in_flight
        arrives = now + pipe.delay
        if flight and flight[-1][0] > arrives:
            arrives = flight[-1][0]  # a shorter delay does not overtake
        flight.append((arrives, data))
        if peer._delivery is None:
            peer._delivery = self._loop.call_at(arrives, peer._deliver)

    def _deliver(self, everything: bool = False) -> None:
        """What has arrived by now (or all in flight), in one read, to the node's inbox."""
        self._delivery = None
        flight = self._in_flight
        if self.closed or not flight or (self._paused and not everything):
            return  # (paused: resume_reading delivers)
        now = self._loop.time()
        chunks = []
        while flight and (everything or flight[0][0] <= now):
            chunks.append(flight.popleft()[1])
        if flight:
            self._delivery = self._loop.call_at(flight[0][0], self._deliver)
        if not chunks:
            return
        data = b"".join(chunks)
        self._last_in = now
        self.packets_in += len(chunks)
        self.bytes_in += len(data)
        try:
            packets = self._decoder.feed(data)
        except RemoteProtocolError as e:
            self.fail(str(e))
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = self.owner.inbox(self.remote_id)
        inbox.receive(packets)

    # -- heartbeats and endings ----------------------------------------------

    def _start(self, heartbeat: float) -> None:
        self._inbox = self.owner.inbox(self.remote_id)
        self._hb = heartbeat
        self._last_in = self._last_out = self._loop.time()
        self._hb_timer = self._loop.call_later(heartbeat, self._heartbeat)

    def _heartbeat(self) -> None:
        # the rule of aemp/net/_conn.py: write at least every hb, give up
        # after monitor_timeout of silence, on our own clock
        now = self._loop.time()
        if self._paused:
            self._last_in = now  # we do not read: the peer's silence is our own doing
        silent = now - self._last_in
        if silent >= self._monitor_timeout:
            self.fail("heartbeat timeout")
            return
        if now - self._last_out >= self._hb:
            self.send([""])
        wait = min(self._hb, self._monitor_timeout - silent)
        self._hb_timer = self._loop.call_later(wait, self._heartbeat)

    def _broken(self, reason: str, read_first: bool = False) -> None:
        """The peer's side ended: so does ours (after reading what it sent, on a close)."""
        if self.closed:
            return
        if read_first:
            self._deliver(everything=True)  # it may fail us: then _end does nothing
        self._end(reason)

    def _end(self, reason: str) -> None:
        if not self.closed:
            self._shutdown(reason)
            self.owner.link_lost(self.remote_id, self, reason)

    def _shutdown(self, reason: str, keep_in_flight: bool = False) -> None:
        self.closed = True
        self.why = reason
        if self._hb_timer is not None:
            self._hb_timer.cancel()
            self._hb_timer = None
        if self._delivery is not None:
            self._delivery.cancel()
            self._delivery = None
        self._in_flight.clear()  # what was coming to us
        peer = self.peer
        if peer is not None and not keep_in_flight:
            peer_flight = peer._in_flight  # what we sent and it has not read
            peer_flight.clear()


class MemoryLink:
    """A connection between two nodes in one process, without sockets.

    ``link(a, b)`` makes one and announces it to both nodes (``link_up``).
    Packets go through the real wire encoder and decoder (``framing``,
    ``max_packet``), arrive a loop turn later plus ``delay`` seconds of
    loop time, in order, and each side sends heartbeats and gives up after
    its ``monitor_timeout`` of silence, as over TCP.

    - ``delay``: seconds each packet takes (may be changed at any time;
      packets never overtake each other).
    - ``drop``: None, or ``drop(sender_nodeid, packet) -> bool``; a packet
      for which it is true is lost while the link stays up. TCP never
      does that: it stands for a peer or a network that loses messages.
    - ``partition()`` / ``heal()``: everything, heartbeats too, is lost
      until healed; each side notices within its monitor_timeout.
    - ``cut(reason)``: the connection breaks; what is in flight is lost
      and both nodes see the link lost at once.
    - ``reconnect()``: a new connection after a cut (as a redial would
      make); ``a`` and ``b`` see ``link_up`` again.
    """

    def __init__(
        self,
        a: LinkOwner,
        b: LinkOwner,
        *,
        delay: float = 0.0,
        framing: str = "msgpack",
        max_packet: int = wire.DEFAULT_MAX_PACKET,
    ) -> None:
        if a.id == b.id:
            raise ValueError(f"a link joins two different nodes (got {a.id!r} twice)")
        if framing not in wire.FRAMINGS:
            raise ValueError(f"unknown framing {framing!r} (known: {', '.join(wire.FRAMINGS)})")
        self.a = a
        self.b = b
        self.delay = delay
        self.framing = framing
        self.max_packet = max_packet
        self.drop: Callable[[str, Packet], bool] | None = None
        self.silent = False
        self.ends: tuple[MemoryEnd, MemoryEnd] | None = None
        # a node that closes closes its end, as it closes its TCP connections
        for owner in (a, b):
            on_close = getattr(owner, "on_close", None)
            if on_close is not None:
                on_close(functools.partial(self._node_closed, owner))

    def __repr__(self) -> str:
        return f"<MemoryLink {self.a.id!r} <-> {self.b.id!r} {'up' if self.is_up else 'down'}>"

    @property
    def is_up(self) -> bool:
        """True while the current connection is open on both sides."""
        return self.ends is not None and not (self.ends[0].closed or self.ends[1].closed)

    def end(self, node: LinkOwner | str) -> MemoryEnd:
        """The Link that `node` (a node or its ID) sends on."""
        if self.ends is None:
            raise RuntimeError(f"{self!r} was never connected")
        nodeid = node if isinstance(node, str) else node.id
        for e in self.ends:
            if e.owner.id == nodeid:
                return e
        raise ValueError(f"{nodeid!r} is not an end of {self!r}")

    def connect(self) -> None:
        """Open a connection and announce it to both nodes (link_up)."""
        if self.is_up:
            raise RuntimeError(f"{self!r} is already connected")
        if self.ends is not None:
            # The end of the old connection reaches a side that has not heard
            # of it yet before the new one can be made: a node refuses a
            # second connection while it has a link (aemp/net/_network.py).
            for e in self.ends:
                peer = e.peer
                if not e.closed and peer is not None:
                    e._broken(peer._peer_sees, read_first=bool(peer._peer_sees))
        timeouts = [_monitor_timeout(n) for n in (self.a, self.b)]
        ea = MemoryEnd(self, self.a, self.b.id, timeouts[0])
        eb = MemoryEnd(self, self.b, self.a.id, timeouts[1])
        ea.peer, eb.peer = eb, ea
        self.ends = (ea, eb)
        # each side writes often enough for the stricter one (aemp/net/_conn.py)
        hb = min(max(wire.MIN_HEARTBEAT, t / 4) for t in timeouts)
        self.a.link_up(self.b.id, ea)
        self.b.link_up(self.a.id, eb)
        for e in (ea, eb):
            if not e.closed:
                e._start(hb)

    reconnect = connect

    def cut(self, reason: str = "cut by the test") -> None:
        """Break the connection: both sides see it lost at once, in-flight packets are lost."""
        if self.ends is None:
            return
        for e in self.ends:
            if not e.closed:
                e._shutdown(reason)
        for e in self.ends:
            e.owner.link_lost(e.remote_id, e, reason)

    def partition(self) -> None:
        """Lose everything from now on, heartbeats too, until heal()."""
        self.silent = True

    def heal(self) -> None:
        """Carry packets again after partition() (a link given up meanwhile stays down)."""
        self.silent = False

    def _node_closed(self, owner: LinkOwner) -> None:
        if self.ends is not None:
            end = self.end(owner)
            if not end.closed:
                end._close("node closed")

    def detach(self) -> None:
        """Stop every timer without telling either node (before closing them)."""
        if self.ends is not None:
            for e in self.ends:
                e._shutdown("detached")


def _monitor_timeout(owner: LinkOwner) -> float:
    config = getattr(owner, "config", None)
    return float(getattr(config, "monitor_timeout", 30.0))


def link(a: LinkOwner, b: LinkOwner, **options: Any) -> MemoryLink:
    """Connect two nodes in memory at once; options as for MemoryLink."""
    pipe = MemoryLink(a, b, **options)
    pipe.connect()
    return pipe


class Mesh:
    """Nodes linked pairwise in memory (see mesh())."""

    def __init__(self, nodes: list[Node], links: dict[frozenset[str], MemoryLink]) -> None:
        self.nodes = nodes
        self.links = links

    def __getitem__(self, nodeid: str) -> Node:
        for n in self.nodes:
            if n.id == nodeid:
                return n
        raise KeyError(nodeid)

    def link(self, a: Node | str, b: Node | str) -> MemoryLink:
        """The link between two nodes of the mesh."""
        ida = a if isinstance(a, str) else a.id
        idb = b if isinstance(b, str) else b.id
        return self.links[frozenset((ida, idb))]


@contextlib.asynccontextmanager
async def mesh(
    nodeids: int | Iterable[str] = 3, *, delay: float = 0.0, framing: str = "msgpack", **keys: Any
) -> AsyncIterator[Mesh]:
    """Nodes (IDs "a", "b", ... or the ones given) each linked to every other in memory.

    ``keys`` are Node configuration keys for every node (monitor_timeout,
    spawn_allow...); the nodes have no network. On exit the links are
    detached and the nodes closed.
    """
    ids = [chr(ord("a") + i) for i in range(nodeids)] if isinstance(nodeids, int) else [*nodeids]
    nodes: list[Node] = []
    links: dict[frozenset[str], MemoryLink] = {}
    try:
        for nodeid in ids:
            nodes.append(await Node(nodeid=nodeid, **keys).start())
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                links[frozenset((a.id, b.id))] = link(a, b, delay=delay, framing=framing)
        yield Mesh(nodes, links)
    finally:
        for pipe in links.values():
            pipe.detach()
        for n in nodes:
            await n.close()


@contextlib.asynccontextmanager
async def pair(
    a: str = "a", b: str = "b", **options: Any
) -> AsyncIterator[tuple[Node, Node, MemoryLink]]:
    """Two nodes linked in memory: ``async with pair() as (a, b, link):``.

    Options as for mesh() (delay, framing, Node configuration keys).
    """
    async with mesh((a, b), **options) as m:
        yield m.nodes[0], m.nodes[1], m.links[frozenset((a, b))]


# ---------------------------------------------------------------- virtual time


class _VirtualSelector(selectors.BaseSelector):
    """A real selector that is only polled; waiting for a timer moves the clock instead."""

    def __init__(self, loop: VirtualTimeLoop, real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is not None:
            self._loop._advance(timeout)  # nothing to do until the next timer: jump to it
            return []
        # No timer at all: only another thread or a signal can wake the loop.
        limit = self._loop.idle_limit
        ready = self._real.select(limit)
        if not ready:
            raise RuntimeError(
                f"virtual-time loop: nothing to run, no timer, and no wake-up within "
                f"{limit} s of real time: the program waits for something that cannot happen"
            )
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer when nothing is ready.

    Use it as a loop factory: ``asyncio.Runner(loop_factory=VirtualTimeLoop)``,
    or ``aemp.testing.run(main())``. ``loop.time()`` starts at 0.0 and moves
    only when the loop would otherwise wait for a timer. Real I/O (sockets,
    subprocesses) still works but takes no virtual time while its timers
    jump ahead: do not mix it with virtual time. A loop that has nothing to
    run and no timer waits ``idle_limit`` seconds of real time for another
    thread, then raises RuntimeError instead of hanging.
    """

    idle_limit = 10.0

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_VirtualSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self._virtual_now

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh VirtualTimeLoop and return its result."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


# ---------------------------------------------------------------- waiting


def _describe(predicate: Callable[[], Any]) -> str:
    name = getattr(predicate, "__name__", "")
    if name and name != "<lambda>":
        return f"{name}()"
    try:
        source = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
    at = source.find("lambda")
    if at < 0:
        return " ".join(source.split())
    # the lambda ends where a bracket opened before it closes, or at a comma outside brackets
    depth = 0
    end = len(source)
    for i in range(at, len(source)):
        c = source[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                end = i
                break
            depth -= 1
        elif c == "," and depth == 0:
            end = i
            break
    return " ".join(source[at:end].split())


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a bound on loop time, the point of it
    *,
    what: str | None = None,
    interval: float = 0.01,
) -> T:
    """Wait until ``predicate()`` is true and return its value.

    It is checked at once and then every ``interval`` seconds of loop time
    (virtual time under VirtualTimeLoop); an awaitable result is awaited.
    After ``timeout`` seconds of loop time it raises TimeoutError, saying
    what it waited for: ``what``, else the predicate's name or source.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = time.monotonic()
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        left = deadline - loop.time()
        if left <= 0:
            real = time.monotonic() - started
            raise TimeoutError(
                f"waited {timeout} s (loop time; {real:.3f} s real) for "
                f"{what or _describe(predicate)}; last value {value!r}"
            )
        await asyncio.sleep(min(interval, left))


# ---------------------------------------------------------------- hooks into a node


def connection(node: Node, nodeid: str) -> Any:
    """The live link from `node` to `nodeid`: over TCP the connection object
    of aemp.net (``transport``, ``wire``, ``fail(reason)``), in memory a
    MemoryEnd. LookupError if there is none. What it offers beyond the Link
    of aemp/_seam.py may change with aemp's version."""
    conn = node.link(nodeid)
    if conn is None:
        raise LookupError(f"node {node.id!r} has no link to {nodeid!r}")
    return conn


def cut_link(node: Node, nodeid: str, reason: str = "cut by the test") -> None:
    """Fail `node`'s live link to `nodeid` as a broken connection would:
    what was not written is dropped, the node's monitors on `nodeid` fire
    with ("transport_error", nodeid, reason) and the peer sees the link
    lost. LookupError if there is no link."""
    connection(node, nodeid).fail(reason)


def network(node: Node) -> Network:
    """The node's network (aemp.net.Network: ``addresses``, the address book;
    ``conns``; ``settings``; ``dial``...), for tests that play a peer's part.
    RuntimeError for a node without one (no binds, seeds or secret)."""
    net = node.network
    if net is None:
        raise RuntimeError(f"node {node.id!r} has no network (not started, or nothing to bind)")
    return net


def take_names(node: Node) -> dict[str, str]:
    """Take the next port ID of each of the node's counters: {"local": what
    port() would make next, "spawn": what spawn() would name next, "reply":
    what the next cal's reply port would be}. The node never gives these
    out: a test can pose as a peer that guessed them."""
    return {kind: node.take_name(kind) for kind in ("local", "spawn", "reply")}


def monitor_raw(node: Node, nodeid: str, name: str, cb: Callable[..., Any]) -> Monitor:
    """Monitor the port `name` of node `nodeid` without the checks of mon():
    the node sends ["", "mon1", name] as any peer may, whatever `name` is,
    and cb(*reason) hears the answer. For tests of what a node answers."""
    return node.mon_name(nodeid, name, cb)
