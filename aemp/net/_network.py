# A node's network: its listeners, its connections (aemp/net/_conn.py),
# how it reaches other nodes (dialling, seeds, the address book) and the
# protocol settings it speaks (wire.Settings from the configuration).
#
# It serves a LinkOwner and offers it a Connector (aemp/_seam.py): every
# connection that authenticates becomes a Link handed to owner.link_up,
# what arrives on it goes to owner.inbox(nodeid), a lost link is reported
# with owner.link_lost, a connect request that ends without a link with
# owner.unreachable. Where a node listens comes from the address book,
# else from owner.lookup (the database); a seed that turns out to be a
# node, or this very node, is reported with owner.seed_greeted and
# owner.seed_is_self. Nothing here imports the kernel, the node or the
# database.
#
# Two nodes that dial each other at once get two connections. Closing one
# on which we sent our auth line could lose what the peer sends on it, so
# none is closed for being second: a connection that authenticates while
# another to the same node is under way waits (Network._settle), and the
# link is the one left, or between aemp nodes the one with the smaller
# nonce, or, with a Perl peer, the one it keeps (docs/protocol.md, 11).
#
# Connections before authentication are bounded (docs/protocol.md, 13):
# every connection in its handshake counts toward max_handshakes, the
# accepted ones also toward max_handshakes_per_address of their source
# (an IPv4 address, an IPv6 /64). When a new one would pass a cap, the
# oldest accepted connection in its handshake (of that source, for the
# per-address cap) is reset, so a flood of stalled connections keeps
# only the newest ones and a legitimate peer that connects during it
# gets its turn at once. Dialled connections count but are never closed
# for it: this node made them, for nodes its own code wants to reach, so
# there are as many as it chose, and an inbound flood must not keep it
# from reaching anyone; they make room by closing accepted ones. Closing
# for a cap, and the failed handshakes of accepted connections, are
# logged a few lines per burst (_Burst), never one line per connection.
#
# Links coming up and going down are logged at INFO with the node ID, the
# address and the reason; a dialled address that keeps failing is logged
# once per change of its problem (dial_problem), not once per attempt.
#
# Every wait (connect_interval, the twin deadline, the seeds' back-off,
# the log bursts) is on the event loop's clock.
#
# Data connections (docs/protocol.md, "Data connections") come in on the
# same listeners and authenticate the same way, but never become links:
# one that authenticates is handed to the data stream (RawStream) that
# this node expects under its dataconn_id, from that very node, and is
# closed otherwise. Expectations are few (MAX_PENDING_STREAMS) and end
# with their future, which the layer above bounds with a timeout.

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from .. import wire
from .._addr import dial_order, is_unix, listen_addresses, parse_address, parse_bind
from .._config import Config
from .._errors import ConfigError, MessageError, OutOfRange
from .._seam import LinkOwner
from .._version import __version__
from ._conn import Conn
from ._stream import RawStream
from ._unix import UnixListener

log = logging.getLogger("aemp.transport")

# A burst of log-worthy events ends when none has come for this long.
BURST_QUIET = 10.0
# Data connections a node waits for at once (opened by it or for a peer):
# each is one expected handshake, and a peer's requests must not pile up.
MAX_PENDING_STREAMS = 1024
# Failed handshakes of accepted connections logged one by one per burst;
# the rest are counted and told in one line when the burst ends.
FAILED_HANDSHAKES_LOGGED = 5
# Addresses whose last dial problem is remembered, so that it is logged once
# (Network.dial_problem); the oldest go first.
MAX_DIAL_PROBLEMS = 4096


class _Burst:
    """Events that may come by the thousand (a flood), logged a few per
    burst: the first `each` one by one, then a count when none has come
    for BURST_QUIET seconds (on the loop's clock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, each: int, summary: str) -> None:
        self.loop = loop
        self.each = each
        self.summary = summary  # %-format: node ID, count, seconds
        self.nodeid = ""
        self.count = 0
        self.first = self.last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, nodeid: str, line: Callable[[], None]) -> None:
        now = self.loop.time()
        if self._timer is None:
            self.count = 0
            self.first = now
            self._timer = self.loop.call_later(BURST_QUIET, self._check)
        self.nodeid = nodeid
        self.last = now
        self.count += 1
        if self.count <= self.each:
            line()

    def _check(self, ended: bool = False) -> None:
        wait = self.last + BURST_QUIET - self.loop.time()
        if wait > 0 and not ended:
            self._timer = self.loop.call_later(wait, self._check)
            return
        self._timer = None
        if self.count > self.each:
            log.warning(self.summary, self.nodeid, self.count, self.last - self.first)

    def close(self) -> None:
        """The node closes: tell the count of a burst under way."""
        if self._timer is not None:
            self._timer.cancel()
            self._check(ended=True)


def source_of(host: str) -> str:
    """What max_handshakes_per_address counts by: an IPv4 address (also
    one mapped into IPv6), or the /64 an IPv6 address is in (one host
    often holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP address (a unix socket): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Network:
    """A node's listeners, its connections and how it reaches other nodes."""

    def __init__(self, owner: LinkOwner, config: Config, settings: wire.Settings) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.config = config
        self.settings = settings
        self.servers: list[asyncio.base_events.Server] = []
        self.listeners: list[str] = []
        self._unix: list[UnixListener] = []  # their socket files go on close
        # data connections: expected (dataconn_id -> the peer's node ID and
        # the future of its stream), and the streams open now
        self._expected: dict[str, tuple[str, asyncio.Future[RawStream]]] = {}
        self.streams: set[RawStream] = set()
        self.conns: set[Conn] = set()
        self.addresses: dict[str, list[str]] = {}  # node ID -> where it listens
        self._dials: dict[str, asyncio.Future[Any]] = {}
        self.seeds: dict[str, str] = {}  # seed address -> node ID once greeted ("" before)
        # seed address -> why its last attempt failed (gone once it connects)
        self.seed_problems: dict[str, str] = {}
        # address -> the problem last logged for dialling it: a peer that stays
        # unreachable, or keeps refusing us, is logged once per change, not per attempt
        self._dial_problems: dict[str, str] = {}
        self._change_waiters: list[asyncio.Future[None]] = []
        self._pulse = asyncio.Event()
        self._seeds_pending: set[str] = set()  # seeds whose first dial has not ended
        # node ID -> the deadline for a peer to close one of two connections
        self._undecided: dict[str, asyncio.TimerHandle] = {}
        self._closing = False
        # connections in their handshake: accepted (oldest first, with their
        # source), by source, and dialled (see the module comment)
        self._accepting: dict[Conn, str] = {}
        self._by_source: dict[str, dict[Conn, None]] = {}
        self._dialling: set[Conn] = set()
        self._cap_burst = _Burst(
            self.loop,
            1,
            "node %s: closed %d connections in their handshake over %.1f s "
            "(max_handshakes, max_handshakes_per_address)",
        )
        self._failed_burst = _Burst(
            self.loop,
            FAILED_HANDSHAKES_LOGGED,
            "node %s: %d accepted connections failed in their handshake over %.1f s "
            f"(the first {FAILED_HANDSHAKES_LOGGED} logged)",
        )

    async def listen(self, binds: tuple[str, ...]) -> None:
        loop = self.loop
        bound: list[tuple[str | None, socket.AddressFamily, str, int]] = []
        for bind in binds:
            host, port = parse_bind(bind, "'binds' entry")
            if is_unix(bind):
                assert host is not None
                unix = UnixListener(host, self.config.listen_backlog)
                self._unix.append(unix)
                self.servers.append(
                    await loop.create_unix_server(lambda: Conn(self, peeraddr="?"), sock=unix.sock)
                )
                continue
            try:
                server = await loop.create_server(
                    lambda: Conn(self, peeraddr="?"),
                    host,
                    port,
                    reuse_address=True,
                    backlog=self.config.listen_backlog,
                )
            except OSError as e:
                raise ConfigError(f"cannot listen on {bind!r}: {e.strerror or e}") from e
            self.servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()  # an IP address, whatever the bind named
                bound.append((host, sock.family, addr[0], addr[1]))
        self.listeners = listen_addresses(bound, tuple(u.path for u in self._unix))

    # -- connections in their handshake -------------------------------------

    def handshake_started(self, conn: Conn, host: str | None) -> str | None:
        """Count `conn` (accepted from `host`, or dialled: None) among the
        connections in their handshake, closing the oldest accepted ones
        over a cap; the reason to refuse `conn` itself, if it must go."""
        cfg = self.config
        source = None if host is None else source_of(host)
        if source is None:
            self._dialling.add(conn)
        else:
            same = self._by_source.get(source, {})
            if len(same) >= cfg.max_handshakes_per_address:
                self._cap_reached(
                    next(iter(same)),
                    f"max_handshakes_per_address ({cfg.max_handshakes_per_address}) "
                    f"connections from {source} in their handshake",
                )
        # a dialled one is counted already, an accepted one not yet
        if len(self._accepting) + len(self._dialling) >= cfg.max_handshakes + (source is None):
            why = f"max_handshakes ({cfg.max_handshakes}) connections in their handshake"
            if self._accepting:
                self._cap_reached(next(iter(self._accepting)), why)
            elif source is not None:  # all dialled: the new accepted one goes
                self._cap_burst.note(self.owner.id, lambda: self._log_cap(conn, why, "new"))
                return f"closed: {why}"
        if source is not None:
            self._accepting[conn] = source
            self._by_source.setdefault(source, {})[conn] = None
        return None

    def _cap_reached(self, oldest: Conn, why: str) -> None:
        self._cap_burst.note(self.owner.id, lambda: self._log_cap(oldest, why, "oldest"))
        oldest.drop(f"closed: {why}, this one the oldest")

    def _log_cap(self, conn: Conn, why: str, which: str) -> None:
        log.warning(
            "node %s: %s: closing the %s (%s), and so on: counted, not logged, until none for %g s",
            self.owner.id,
            why,
            which,
            conn.peeraddr,
            BURST_QUIET,
        )

    def handshake_ended(self, conn: Conn) -> None:
        """`conn` authenticated or closed: it no longer counts."""
        source = self._accepting.pop(conn, None)
        if source is not None:
            same = self._by_source[source]
            del same[conn]
            if not same:
                del self._by_source[source]
        else:
            self._dialling.discard(conn)

    def handshake_failed(self, conn: Conn, reason: str) -> None:
        """Log a failed handshake: a dialled one always, an accepted one
        a few per burst (anyone may connect, so anyone could fill the log);
        one with a node that another connection leads to is no problem."""
        nodeid = conn._greeted_as or conn.expect
        if nodeid and (
            self.owner.node_is_up(nodeid)
            or any(c is not conn and c.leads_to(nodeid) for c in self.conns)
        ):
            # Both nodes dialled at once, and the peer, whose link was up
            # first, refused this one ("already connected"): the link stands.
            log.info(
                "node %s: a second connection with %s ended in its handshake (%s); "
                "another one is up or under way",
                self.owner.id,
                nodeid,
                reason,
            )
            return
        if conn not in self._accepting:  # dialled: ours, as many as we made
            self.dial_problem(conn.peeraddr, f"connection with {conn.describe()} failed", reason)
            return
        self._failed_burst.note(
            self.owner.id,
            lambda: log.warning(
                "node %s: connection with %s failed: %s", self.owner.id, conn.describe(), reason
            ),
        )

    def dial_problem(self, addr: str, what: str, why: str, level: int = logging.WARNING) -> None:
        """Log a failed dial of `addr`, once until the problem changes or
        the address connects (attempts repeat every few seconds)."""
        if self._dial_problems.get(addr) == why:
            log.debug("node %s: %s: %s (again)", self.owner.id, what, why)
            return
        if len(self._dial_problems) >= MAX_DIAL_PROBLEMS and addr not in self._dial_problems:
            del self._dial_problems[next(iter(self._dial_problems))]
        self._dial_problems[addr] = why
        log.log(level, "node %s: %s: %s (logged again when this changes)", self.owner.id, what, why)

    # -- events from connections -------------------------------------------

    def greeted(self, conn: Conn, nodeid: str) -> str | None:
        """Decide whether to go on with a peer that says it is `nodeid`."""
        if "#" in nodeid or not nodeid.isprintable() or any(c.isspace() for c in nodeid):
            why = f"node ID {nodeid[:80]!r} is not valid (no '#', no white space)"
            log.warning("node %s: refused %s: %s", self.owner.id, conn.peeraddr, why)
            return why
        greeting = conn.wire.remote_greeting
        other = None if greeting is None else wire.networks_differ(self.settings.network, greeting)
        if other is not None:
            why = other
            # both sides see both greetings, so both say so; a node of another
            # network that dials us again and again is logged a few per burst
            if conn in self._accepting:
                self._failed_burst.note(self.owner.id, lambda: self._log_refused(conn, why))
            else:
                self._log_refused(conn, why)
            return why
        if conn.expect is None and conn.peeraddr in self.seeds:
            self.seeds[conn.peeraddr] = nodeid
            self._changed()
            self.owner.seed_greeted(nodeid)
        if nodeid == self.owner.id:
            if conn.peeraddr in self.seeds:
                del self.seeds[conn.peeraddr]  # a seed address that leads to ourselves
                self._changed()
                self.owner.seed_is_self()
            return "I refuse to talk to myself"
        if self.owner.node_is_up(nodeid):
            return f"{nodeid} already connected, not connecting again."
        # Another connection to the same node may be under way (both nodes
        # dialled): this one goes on too, since the other may have carried
        # our auth line already, and closing that would lose what the peer
        # sends on it. _settle picks one when both are through.
        conn._greeted_as = nodeid
        if conn.expect is not None and conn.expect != nodeid:
            self._settle(conn.expect)  # not the node we dialled for after all
        return None

    def _log_refused(self, conn: Conn, why: str) -> None:
        log.warning("node %s: refused %s: %s", self.owner.id, conn.peeraddr, why)

    def authenticated(self, conn: Conn) -> None:
        self.handshake_ended(conn)
        if self._dial_problems.pop(conn.peeraddr, None) is not None:
            log.info("node %s: %s reachable again", self.owner.id, conn.peeraddr)
        nodeid = conn.remote_id
        if conn.expect is not None or conn.peeraddr in self.seeds:
            self.addresses.setdefault(nodeid, [])
            if conn.peeraddr not in self.addresses[nodeid]:
                self.addresses[nodeid].insert(0, conn.peeraddr)
        if self.owner.node_is_up(nodeid):
            # cannot happen while greeted() refuses a node that has a link
            # and _settle waits for every connection under way; kept so
            # that a link is never replaced under the packets sent on it
            log.warning("node %s: second connection to %s closed", self.owner.id, nodeid)
            conn.close(f"{nodeid} already connected (switched connections)")
            return
        conn.take_inbox(self.owner.inbox(nodeid))  # what arrives on it is delivered
        self._settle(nodeid)

    def _settle(self, nodeid: str, force: bool = False) -> None:
        """Make the link to `nodeid` once it is clear which connection it is.

        A connection that authenticated while another one to the same node
        is still in its handshake waits, sending nothing but heartbeats
        (packets for the node wait in the node until link_up), while what arrives
        on it is delivered: a peer sends on one connection only. When the
        others are gone it becomes the link. When several authenticated, an
        aemp peer (tiebreak=nonce) picks the same one as we do, the one
        with the smaller pair_key, and both close the others, on which
        neither side sent anything. Any other peer (AnyEvent::MP keeps the
        connection that authenticated first on its side and closes the
        later one) chooses for us: we wait for it to close the others, for
        at most monitor_timeout."""
        if force:
            self._undecided.pop(nodeid, None)
        if self._closing or self.owner.node_is_up(nodeid):
            return
        group = [c for c in self.conns if c.leads_to(nodeid)]
        ready = [c for c in group if c.open]
        if not ready or len(ready) < len(group):
            return  # none through yet, or one still in its handshake
        if len(ready) > 1 and not force and not all(c.tiebreak for c in ready):
            if nodeid not in self._undecided:
                timeout = self.config.monitor_timeout
                self._undecided[nodeid] = self.loop.call_later(timeout, self._settle, nodeid, True)
            return
        timer = self._undecided.pop(nodeid, None)
        if timer is not None:
            timer.cancel()
        link = min(ready, key=lambda c: c.wire.pair_key)
        self.make_link(link)
        for other in ready:
            if other is not link:
                other.close(f"{nodeid}: simultaneous connect, the other connection won")
        self._changed()

    def make_link(self, conn: Conn) -> None:
        """Make `conn` the node's link to its peer."""
        nodeid = conn.remote_id
        conn.is_link = True  # from here on its loss is the link's (see closed)
        how = "dialled" if conn.expect is not None or conn.peeraddr in self.seeds else "accepted"
        log.info("node %s: link to %s up (%s, %s)", self.owner.id, nodeid, how, conn.peeraddr)
        self.owner.link_up(nodeid, conn)
        if not conn.closed:
            conn.take_inbox(self.owner.inbox(nodeid))  # the node's inbox for the link
        if not conn.authenticated.done():
            conn.authenticated.set_result(nodeid)

    def closed(self, conn: Conn, reason: str) -> None:
        self.handshake_ended(conn)
        if conn.dataconn_id is not None or conn.wire.is_dataconn:
            return  # never a link, nor one a link waits for
        if conn.is_link:
            if not self._closing:  # else the node's own close says it
                log.info(
                    "node %s: link to %s down (%s): %s",
                    self.owner.id,
                    conn.remote_id,
                    conn.peeraddr,
                    reason,
                )
            self.owner.link_lost(conn.remote_id, conn, reason)
            return
        nodeid = conn._greeted_as or conn.expect
        if nodeid:
            self._settle(nodeid)  # a connection the others waited for is gone

    # -- data connections ------------------------------------------------------

    def expect_stream(self, dataconn_id: str, peer: str) -> asyncio.Future[RawStream]:
        """The future of the data stream `dataconn_id` with node `peer`,
        whichever side dials; cancel it to stop waiting."""
        if dataconn_id in self._expected:
            raise OutOfRange(f"data connection {dataconn_id!r} is expected already")
        if len(self._expected) >= MAX_PENDING_STREAMS:
            raise OutOfRange(
                f"node {self.owner.id}: already waiting for {MAX_PENDING_STREAMS} data "
                f"connections (MAX_PENDING_STREAMS); {dataconn_id!r} refused"
            )
        fut: asyncio.Future[RawStream] = self.loop.create_future()
        self._expected[dataconn_id] = (peer, fut)

        def done(f: asyncio.Future[RawStream]) -> None:
            entry = self._expected.get(dataconn_id)
            if entry is not None and entry[1] is f:
                del self._expected[dataconn_id]

        fut.add_done_callback(done)
        return fut

    def expected_stream(self, dataconn_id: str) -> asyncio.Future[RawStream] | None:
        """The future expect_stream made for `dataconn_id`, while it waits."""
        entry = self._expected.get(dataconn_id)
        return entry[1] if entry is not None else None

    def stream_greeted(self, conn: Conn, nodeid: str) -> str | None:
        """Go on with a data connection's handshake, greeted by `nodeid`?"""
        greeting = conn.wire.remote_greeting
        dataconn_id = conn.dataconn_id or (greeting.dataconn_id if greeting else None)
        entry = self._expected.get(dataconn_id or "")
        if nodeid == self.owner.id:
            return "I refuse to talk to myself"
        if entry is None or entry[0] != nodeid:
            why = f"no data connection {dataconn_id!r} is expected from {nodeid[:80]!r}"
            log.warning("node %s: refused %s: %s", self.owner.id, conn.peeraddr, why)
            return why
        return None

    def stream_authenticated(self, conn: Conn, ev: wire.Authenticated) -> None:
        """Hand an authenticated data connection to the stream expected for it."""
        self.handshake_ended(conn)
        assert ev.dataconn_id is not None
        entry = self._expected.get(ev.dataconn_id)
        if entry is None or entry[0] != conn.remote_id or entry[1].done():
            conn.close(f"data connection {ev.dataconn_id!r} is no longer expected")
            return
        transport, phase = conn.detach()
        stream = RawStream(
            transport,
            phase,
            peer=conn.remote_id,
            dataconn_id=ev.dataconn_id,
            provider=ev.greeting.provider,
            limit=self.config.stream_buffer,
            forget=self.streams.discard,
        )
        self.streams.add(stream)
        log.debug(
            "node %s: data connection %s with %s (%s%s)",
            self.owner.id,
            ev.dataconn_id,
            conn.remote_id,
            ev.method,
            ", tls" if ev.tls else "",
        )
        entry[1].set_result(stream)

    async def dial_stream(self, dataconn_id: str, peer: str, addrs: list[str]) -> None:
        """Dial `peer` (at `addrs`, and where else it is known to listen) for
        the data connection `dataconn_id`, expected with expect_stream; its
        future gets the stream. ConnectionError if no address led to it."""
        known = list(addrs)
        for addr in [*(self.addresses.get(peer) or ()), *await self.owner.lookup(peer)]:
            if addr not in known:
                known.append(addr)
        errors: list[str] = []
        for addr in dial_order(known):
            try:
                host, port = parse_address(addr)
            except ConfigError as e:
                errors.append(str(e))
                continue

            def make(addr: str = addr) -> Conn:
                return Conn(self, peeraddr=addr, expect=peer, dataconn_id=dataconn_id)

            try:
                if is_unix(addr):
                    _, conn = await self.loop.create_unix_connection(make, host)
                else:
                    _, conn = await self.loop.create_connection(make, host, port)
            except OSError as e:
                errors.append(f"{addr}: {e.strerror or e}")
                continue
            reason = await asyncio.shield(conn.finished)
            if conn.open:
                return
            errors.append(f"{addr}: {reason}")
        raise ConnectionError(
            f"cannot open data connection {dataconn_id!r} to {peer!r}: "
            + ("; ".join(errors) or "no address known (does it have binds?)")
        )

    # -- dialling ------------------------------------------------------------

    def connect(self, nodeid: str) -> None:
        """Start connecting to a remote node known by ID (Connector.connect)."""
        task = self.owner.spawn_task(self._dial_node(nodeid))
        self._dials[nodeid] = task
        task.add_done_callback(lambda t: self._dials.pop(nodeid, None))

    def forget(self, nodeid: str) -> None:
        """The node forgot a departed peer: so do we, but for a seed's address."""
        if nodeid not in self.seeds.values():
            self.addresses.pop(nodeid, None)

    def _changed(self) -> None:
        """Wake the dials waiting for a seed's or a node's identity, and changed()'s futures."""
        self._pulse.set()
        self._pulse = asyncio.Event()
        waiters, self._change_waiters = self._change_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """A future resolved at the next change of the seeds (greeted, failed)."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._change_waiters.append(fut)
        return fut

    async def _dial_node(self, nodeid: str) -> None:
        interval = self.config.connect_interval
        is_up = self.owner.node_is_up
        try:
            async with asyncio.timeout(interval):
                addrs = await self._addresses_of(nodeid)
                if not addrs:
                    if not is_up(nodeid):
                        self.owner.unreachable(nodeid, "no known address")
                    return
                while not is_up(nodeid):
                    for addr in addrs:
                        try:
                            conn = await self.dial(addr, expect=nodeid)
                        except (OSError, ConnectionError) as e:
                            log.debug("node %s: dial %s failed: %s", self.owner.id, addr, e)
                            if is_up(nodeid):
                                return  # connected the other way round meanwhile
                            continue
                        if conn.remote_id == nodeid or is_up(nodeid):
                            return
                    await asyncio.sleep(min(0.4, interval / 4) * random.uniform(0.9, 1.0))
        except TimeoutError:
            pass
        if not is_up(nodeid):
            self.owner.unreachable(nodeid, "connect timeout")

    async def _addresses_of(self, nodeid: str) -> list[str]:
        """Where a node listens: what we dialled before, else what the database knows."""
        while not self.owner.node_is_up(nodeid):
            addrs = list(self.addresses.get(nodeid) or ())
            for addr in await self.owner.lookup(nodeid):
                if addr not in addrs:
                    addrs.append(addr)
            if addrs or not self._seeds_pending:
                return dial_order(addrs)
            await self._pulse.wait()  # a seed not yet greeted may be the node we want
        return []

    async def dial(self, addr: str, expect: str | None = None) -> Conn:
        """Connect to addr and wait until the connection is the link (it
        may wait for a twin first; ConnectionError if it is closed instead)."""
        host, port = parse_address(addr)
        if is_unix(addr):
            _, conn = await self.loop.create_unix_connection(
                lambda: Conn(self, peeraddr=addr, expect=expect), host
            )
        else:
            _, conn = await self.loop.create_connection(
                lambda: Conn(self, peeraddr=addr, expect=expect), host, port
            )
        await asyncio.shield(conn.authenticated)
        return conn

    def keep_seed(self, addr: str) -> None:
        """Stay connected to a seed address for as long as the node lives."""
        parse_address(addr, "'seeds' entry")
        if addr not in self.seeds:
            self.seeds[addr] = ""
            self._seeds_pending.add(addr)
            self.owner.spawn_task(self._seed_loop(addr))

    def drop_seed(self, addr: str) -> bool:
        """Stop keeping the seed address `addr` (a link made through it
        stays); False if it was no seed."""
        if addr not in self.seeds:
            return False
        del self.seeds[addr]  # its _seed_loop ends at its next turn
        if addr in self._seeds_pending:
            self._seeds_pending.discard(addr)
            self._changed()
        return True

    async def _seed_loop(self, addr: str) -> None:
        # docs/protocol.md section 11: at once, then 1.2-2.4 s doubling up to monitor_timeout
        cap = self.config.monitor_timeout
        delay = 0.0
        while addr in self.seeds:
            nodeid = self.seeds[addr]
            if nodeid and self.owner.node_is_up(nodeid):
                await asyncio.sleep(min(0.5, cap))  # connected the other way round
                continue
            conn = None
            try:
                conn = await self.dial(addr)
            except (OSError, ConnectionError) as e:
                why = str(e) or type(e).__name__
                if addr in self.seeds:  # not one that turned out to lead here
                    self.seed_problems[addr] = why
                if type(e) is not ConnectionError:  # a failed handshake: handshake_failed logged it
                    # unreachable: told at INFO, as links coming and going are
                    self.dial_problem(addr, f"seed {addr}", why, logging.INFO)
                self._changed()
            else:
                self.seed_problems.pop(addr, None)
            if addr in self._seeds_pending:
                self._seeds_pending.discard(addr)
                self._changed()
            if conn is not None:
                delay = 0.0
                await conn.finished
                continue
            delay = min(cap, delay * 2 if delay else 1.2 * (1 + random.random()))
            await asyncio.sleep(delay)

    def statistics(self) -> dict[str, dict[str, Any]]:
        """The links, by node ID: the peer's address, the bytes read and
        written in the data phase (packets as encoded, before TLS), the
        packets written, the framing we send in and the TLS version (None
        without TLS). The packets read are the kernel's to count."""
        return {
            c.remote_id: {
                "address": c.peeraddr,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "packets_out": c.packets_out,
                "framing": c.wire.send_framing,
                "tls": c.wire.tls_version,
            }
            for c in self.conns
            if c.is_link and not c.closed
        }

    async def close(self) -> None:
        self._closing = True
        self._cap_burst.close()
        self._failed_burst.close()
        for timer in self._undecided.values():
            timer.cancel()
        self._undecided.clear()
        for server in self.servers:
            server.close()
        for conn in list(self.conns):
            conn.close("node closed")
        for stream in list(self.streams):
            stream.close(abort=True)
        for _, fut in list(self._expected.values()):
            fut.cancel()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        for unix in self._unix:
            unix.remove()
        self._unix.clear()


def make_settings(cfg: Config, nodeid: str) -> wire.Settings:
    """The protocol settings of node `nodeid` with configuration `cfg`."""

    tls_server = tls_client = None
    if cfg.cert is not None:
        from ..tls import ssl_contexts

        tls_server, tls_client = ssl_contexts(cfg.cert)
    if cfg.secret is None and cfg.cert is None:
        raise ConfigError(
            f"node {nodeid!r} has neither a shared secret nor a certificate, so no other node "
            "can trust it: set 'secret' (aemp gensecret) or 'cert' (aemp gencert)"
        )
    try:
        return wire.Settings(
            nodeid=nodeid,
            provider=f"aemp-py-{__version__}",
            secret=cfg.secret,
            tls_server=tls_server,
            tls_client=tls_client,
            auth_offer=cfg.auth_offer,
            auth_accept=cfg.auth_accept,
            framing_format=cfg.framing_format,
            max_packet=cfg.max_packet,
            max_objects=cfg.max_objects,
            network=cfg.network,
            heartbeat=max(
                wire.MIN_HEARTBEAT, cfg.monitor_timeout / 4
            ),  # 'monitor_timeout' <= 86400
        )
    except MessageError as e:  # pragma: no cover - Settings raises ConfigError
        raise ConfigError(str(e)) from e
