# asyncio glue between sockets and the sans-IO protocol core (aemp.wire).
#
# One _Conn per TCP connection, either direction. Until the handshake ends
# it feeds bytes to wire.Connection and acts on its events; after it, bytes
# go through the core's fast path straight to the node. Outgoing packets
# are encoded at once (so a bad message raises in the caller's snd). A
# lone packet is written at once (a request or a reply waits for nothing);
# the ones behind it are collected and written together at the end of the
# loop turn, so a burst of small sends costs two system calls. A burst
# made while delivering what the peer sent (replies to its requests) goes
# out every 256 packets, so that the peer, which waits for them, can work
# on the first while we make the rest. Heartbeats and limits live here:
# the core has no clock.
#
# A connection that fails after the handshake is aborted (reset, its
# unsent data dropped): its monitors fire, so nothing queued on it may
# arrive later. Only a close on purpose writes out what is queued.
#
# Two nodes that dial each other at once get two connections. Closing one
# on which we sent our auth line could lose what the peer sends on it, so
# none is closed for being second: a connection that authenticates while
# another to the same node is under way waits (Network._settle), and the
# link is the one left, or between aemp nodes the one with the smaller
# nonce, or, with a Perl peer, the one it keeps (docs/protocol.md, 11).

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from . import wire
from ._addr import format_address, listen_addresses, parse_address, parse_bind
from ._errors import ConfigError, MessageError, RemoteProtocolError

if TYPE_CHECKING:
    from ._node import Node
    from ._remote import Remote

log = logging.getLogger("aemp.transport")

SEND_BUFFER_LIMIT = 256 * 1024 * 1024  # bytes written but not taken by the peer
CHUNK_PACKETS = 256  # a burst is written in parts of this many packets
LONE_GAP = 0.001  # seconds after a write at once that a packet is taken to be lone
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close drops the send queue, sends RST


class _Conn(asyncio.Protocol):
    """One TCP connection to another node."""

    def __init__(self, net: Network, peeraddr: str, expect: str | None = None) -> None:
        self.net = net
        self.node = net.node
        self.peeraddr = peeraddr
        self.expect = expect  # the node ID we dialled for, if any
        self.remote_id = ""
        self.remote: Remote | None = None
        self.wire = wire.Connection(net.settings, peeraddr=peeraddr)
        self._encode = self.wire.encode
        self._encode_message = self.wire.encode_message
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.closed = False
        self.why = ""
        # the data phase: the core's receive and wrap (None: no wrapping)
        self._receive: Callable[[bytes], Iterable[list[Any]]] | None = None
        self._wrap: Callable[[bytes], bytes] | None = None
        self._chunks: list[bytes] = []  # encoded, to be written by _flush
        self.send_message: Callable[[str, tuple[Any, ...]], None] = self._send_message
        self._append: Callable[[str, tuple[Any, ...]], None] | None = None  # into _chunks
        self._flush_handle: asyncio.Handle | None = None
        # Written at once lately: what follows waits for _flush. Order holds
        # because packets queue only while a flush is due, and _wrote is
        # cleared only with no flush due, so nothing queued is overtaken.
        self._wrote = False
        self._in_read = False  # delivering what we read: a burst of replies goes in parts
        self._timer: asyncio.TimerHandle | None = None
        self._last_in = self._last_out = time.monotonic()
        self._hb: float | None = None
        self._hb_timeout = 0.0
        self._greeted_as = ""
        self.tiebreak = False  # the peer settles twin connections by the nonce rule
        # resolved when this connection becomes the node's link (not merely
        # authenticated: it may wait for a twin, see Network._settle)
        self.authenticated: asyncio.Future[str] = net.node.loop.create_future()
        self.finished: asyncio.Future[str] = net.node.loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if self.expect is None and self.peeraddr == "?":
            peer = t.get_extra_info("peername")
            if peer:
                self.peeraddr = format_address(peer[0], peer[1])
                self.wire = wire.Connection(self.net.settings, peeraddr=self.peeraddr)
                self._encode = self.wire.encode
                self._encode_message = self.wire.encode_message
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                if self.node.config.nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:  # pragma: no cover - not a TCP socket
                pass
        self.net.conns.add(self)
        self.wire.start()
        t.write(self.wire.data_to_send())
        timeout = self.node.config.monitor_timeout
        self._timer = self.node.loop.call_later(timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self._last_in = time.monotonic()
        receive = self._receive
        if receive is not None:  # the data phase
            if self._flush_handle is None:  # no batch open (nothing queued)
                self._wrote = False  # the first reply may go at once
            self._in_read = True
            try:
                self.node._receive(self.remote, receive(data))  # type: ignore[arg-type]
            except RemoteProtocolError as e:
                self.fail(str(e))
                return
            finally:
                self._in_read = False
            if self._chunks:  # replies go out now, not a loop turn later
                self._flush()
            return
        if self.closed:
            return
        try:
            self.wire.receive_data(data)
            self._handshake()
        except RemoteProtocolError as e:
            self.fail(str(e))

    def eof_received(self) -> bool:
        self.fail("Unexpected end-of-file" if self.open else "peer closed during handshake")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"connection lost: {exc}" if exc else "Unexpected end-of-file")

    # -- handshake --------------------------------------------------------

    def _handshake(self) -> None:
        while not self.closed:
            ev = self.wire.next_event()
            out = self.wire.data_to_send()
            if out and self.transport is not None:
                self.transport.write(out)
            if ev is wire.NEED_DATA:
                return
            if isinstance(ev, wire.GreetingReceived):
                refusal = self.net.greeted(self, ev.greeting.nodeid)
                if refusal:
                    self.close(refusal)
                    return
            elif isinstance(ev, wire.Authenticated):
                self._authenticated(ev)
                return
            elif isinstance(ev, wire.ConnectionClosed):
                self.fail("peer closed during handshake")
                return

    def _authenticated(self, ev: wire.Authenticated) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.open = True
        self._encode = self.wire.encoder.encode
        self._encode_message = self.wire.encoder.encode_message
        self._wrap = self.wire.wrap  # until data_phase() below says what is needed
        encoder = self.wire.encoder
        encoder.out = self._chunks
        self._append = encoder.append_message
        self.remote_id = ev.remote_nodeid
        self.tiebreak = ev.greeting.tiebreak
        own_hb = self.net.settings.heartbeat
        if own_hb is not None and ev.remote_heartbeat is not None:
            # we write often enough for the stricter of the two sides, and
            # give up on our own clock: what the peer announced (within the
            # limits the greeting check enforces) cannot make us wait longer
            self._hb = min(own_hb, ev.remote_heartbeat)
            self._hb_timeout = self.node.config.monitor_timeout
            self._timer = self.node.loop.call_later(self._hb, self._heartbeat)
        log.debug(
            "node %s: connected to %s (%s, %s/%s%s)",
            self.node.id,
            ev.remote_nodeid,
            ev.method,
            ev.send_framing,
            ev.recv_framing,
            ", tls" if ev.tls else "",
        )
        self.net.authenticated(self)
        # bytes that arrived right behind the auth line are packets already
        ev2 = self.wire.next_event()
        if isinstance(ev2, wire.Packets) and self.remote is not None and not self.closed:
            self.node._receive(self.remote, ev2.packets)
        if not self.closed and self.remote is not None:
            self._receive, self._wrap = self.wire.data_phase()

    def _handshake_timeout(self) -> None:
        self.fail("Connection timed out (handshake did not finish within monitor_timeout)")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        silent = now - self._last_in
        if silent >= self._hb_timeout:
            self.fail("heartbeat timeout")
            return
        assert self._hb is not None
        if now - self._last_out >= self._hb and not self._chunks:
            self.send([""])
        # look again after hb, or at the deadline if that comes first
        wait = min(self._hb, self._hb_timeout - silent)
        self._timer = self.node.loop.call_later(wait, self._heartbeat)

    # -- sending ----------------------------------------------------------

    def send(self, packet: list[Any]) -> None:
        """Encode now (errors raise here) and write: at once if nothing was
        written lately, else with the others at the end of this loop turn."""
        if self.closed:
            return
        data = self._encode(packet)
        if not self._wrote:
            self._write_now(data)
        elif self._flush_handle is not None:
            chunks = self._chunks
            chunks.append(data)
            if self._in_read and len(chunks) >= CHUNK_PACKETS:
                self._write_chunks()
        elif time.monotonic() - self._last_out > LONE_GAP:
            self._write_now(data)  # written at once a while ago: a later loop turn
        else:
            self._chunks.append(data)
            self._batch()

    def _send_message(self, portname: str, msg: tuple[Any, ...]) -> None:
        """send([portname, *msg]) for a non-empty msg: the hot path of snd,
        as the attribute send_message (see _batch)."""
        if self.closed:
            return
        data = self._encode_message(portname, msg)
        if not self._wrote:
            self._write_now(data)
        elif self._flush_handle is not None:
            chunks = self._chunks
            chunks.append(data)
            if self._in_read and len(chunks) >= CHUNK_PACKETS:
                self._write_chunks()
        elif time.monotonic() - self._last_out > LONE_GAP:
            self._write_now(data)  # written at once a while ago: a later loop turn
        else:
            self._chunks.append(data)
            self._batch()

    def _batch(self) -> None:
        # A batch is open until _flush. Outside a read, send_message is the
        # encoder's own append into the batch meanwhile: one call per packet
        # of a burst instead of two. (In a read, bursts go out in parts.)
        self._flush_handle = self.node.loop.call_soon(self._flush)
        if not self._in_read and self._append is not None:
            self.send_message = self._append

    def _write_now(self, data: bytes) -> None:
        # A lone packet (a request, a reply) leaves without waiting for the
        # loop turn to end. The packets behind it in the same turn are
        # collected and written together at its end. A turn is over when
        # this connection receives or flushes, or a millisecond later (the
        # packets of one burst are made faster than that): a burst costs
        # a few writes, and a lone packet waits for nothing.
        self._wrote = True
        transport = self.transport
        assert transport is not None
        self._last_out = time.monotonic()
        wrap = self._wrap
        transport.write(data if wrap is None else wrap(data))
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT and self._flush_handle is None:
            self._flush_handle = self.node.loop.call_soon(self._flush)  # it fails us, from the loop

    def _write_chunks(self) -> None:
        # a long burst of replies goes out in parts, so that the peer can
        # start on it while we go on; the limit is checked by the _flush due
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._last_out = time.monotonic()
        wrap = self._wrap
        assert self.transport is not None
        self.transport.write(data if wrap is None else wrap(data))

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.send_message = self._send_message  # the batch is over
        transport = self.transport
        if self.closed or transport is None:
            return
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._last_out = time.monotonic()
            wrap = self._wrap
            transport.write(data if wrap is None else wrap(data))
        self._wrote = False
        # checked here, from the loop, never inside a caller's send
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.fail(f"peer is not reading: more than {SEND_BUFFER_LIMIT} bytes unsent")

    # -- closing ----------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close on purpose; pending output is written first."""
        if self.closed:
            return
        if self._flush_handle is not None:
            self._flush()
        self._shutdown(reason)

    def fail(self, reason: str) -> None:
        """The connection broke; whatever was not written is lost.

        In the data phase the connection is aborted: monitors fire for what
        was sent on it, so nothing still buffered may reach the peer later
        (a retry after the monitor fired would run twice). The asyncio
        buffer is dropped, and SO_LINGER 0 drops the kernel's send queue
        too and resets the connection, so the peer fires its monitors."""
        if self.closed:
            return
        if not self.open:
            # our auth line or a TLS alert may be queued: it tells the peer why
            out = self.wire.data_to_send()
            if out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(out)
            log.warning(
                "node %s: connection with %s failed: %s", self.node.id, self.describe(), reason
            )
            self._shutdown(reason)
            return
        self._shutdown(reason, abort=True)

    def _shutdown(self, reason: str, abort: bool = False) -> None:
        self.closed = True
        self._receive = None
        self.send_message = self._send_message  # which drops what comes now
        self.why = reason
        self.wire.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        transport = self.transport
        if transport is not None:
            if abort and not transport.is_closing():
                sock = transport.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except (OSError, AttributeError):  # pragma: no cover - not a TCP socket
                    pass
                transport.abort()
            else:
                transport.close()
        self.net.conns.discard(self)
        self.finished.set_result(reason)
        if not self.authenticated.done():
            self.authenticated.set_exception(ConnectionError(reason))
            self.authenticated.exception()  # retrieved: a failed dial is reported elsewhere
        self.net.closed(self, reason)

    def describe(self) -> str:
        return self.remote_id or self.expect or self.peeraddr

    def leads_to(self, nodeid: str) -> bool:
        """Alive and with `nodeid` at the other end, as far as we know yet."""
        if self.closed:
            return False
        if self._greeted_as:
            return self._greeted_as == nodeid
        return self.expect == nodeid


class Network:
    """A node's listeners, its connections and how it reaches other nodes."""

    def __init__(self, node: Node, settings: wire.Settings) -> None:
        self.node = node
        self.settings = settings
        self.servers: list[asyncio.base_events.Server] = []
        self.listeners: list[str] = []
        self.conns: set[_Conn] = set()
        self.addresses: dict[str, list[str]] = {}  # node ID -> where it listens
        self._dials: dict[str, asyncio.Future[Any]] = {}
        self.seeds: dict[str, str] = {}  # seed address -> node ID once greeted ("" before)
        self._pulse = asyncio.Event()
        self._seeds_pending: set[str] = set()  # seeds whose first dial has not ended
        # node ID -> the deadline for a peer to close one of two connections
        self._undecided: dict[str, asyncio.TimerHandle] = {}
        self._closing = False

    async def listen(self, binds: tuple[str, ...]) -> None:
        loop = self.node.loop
        bound: list[tuple[str | None, socket.AddressFamily, str, int]] = []
        for bind in binds:
            host, port = parse_bind(bind, "'binds' entry")
            try:
                server = await loop.create_server(
                    lambda: _Conn(self, peeraddr="?"), host, port, reuse_address=True
                )
            except OSError as e:
                raise ConfigError(f"cannot listen on {bind!r}: {e.strerror or e}") from e
            self.servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()  # an IP address, whatever the bind named
                bound.append((host, sock.family, addr[0], addr[1]))
        self.listeners = listen_addresses(bound)

    # -- events from connections -------------------------------------------

    def greeted(self, conn: _Conn, nodeid: str) -> str | None:
        """Decide whether to go on with a peer that says it is `nodeid`."""
        if "#" in nodeid or not nodeid.isprintable() or any(c.isspace() for c in nodeid):
            why = f"node ID {nodeid[:80]!r} is not valid (no '#', no white space)"
            log.warning("node %s: refused %s: %s", self.node.id, conn.peeraddr, why)
            return why
        if conn.expect is None and conn.peeraddr in self.seeds:
            self.seeds[conn.peeraddr] = nodeid
            self._changed()
            self.node._db.seed_known(nodeid)
        if nodeid == self.node.id:
            if conn.peeraddr in self.seeds:
                del self.seeds[conn.peeraddr]  # a seed address that leads to ourselves
                self._changed()
                self.node._db.become_global("a seed address leads here")
            return "I refuse to talk to myself"
        remote = self.node._remotes.get(nodeid)
        if remote is not None and remote.link is not None:
            return f"{nodeid} already connected, not connecting again."
        # Another connection to the same node may be under way (both nodes
        # dialled): this one goes on too, since the other may have carried
        # our auth line already, and closing that would lose what the peer
        # sends on it. _settle picks one when both are through.
        conn._greeted_as = nodeid
        if conn.expect is not None and conn.expect != nodeid:
            self._settle(conn.expect)  # not the node we dialled for after all
        return None

    def authenticated(self, conn: _Conn) -> None:
        nodeid = conn.remote_id
        if conn.expect is not None or conn.peeraddr in self.seeds:
            self.addresses.setdefault(nodeid, [])
            if conn.peeraddr not in self.addresses[nodeid]:
                self.addresses[nodeid].insert(0, conn.peeraddr)
        remote = self.node._remotes.get(nodeid)
        if remote is not None and remote.link is not None:
            # cannot happen while greeted() refuses a node that has a link
            # and _settle waits for every connection under way; kept so
            # that a link is never replaced under the packets sent on it
            log.warning("node %s: second connection to %s closed", self.node.id, nodeid)
            conn.close(f"{nodeid} already connected (switched connections)")
            return
        conn.remote = self.node._remote(nodeid)  # what arrives on it is delivered
        self._settle(nodeid)

    def _settle(self, nodeid: str, force: bool = False) -> None:
        """Make the link to `nodeid` once it is clear which connection it is.

        A connection that authenticated while another one to the same node
        is still in its handshake waits, sending nothing but heartbeats
        (packets for the node wait in Remote.pending), while what arrives
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
        remote = self.node._remotes.get(nodeid)
        if self._closing or remote is None or remote.link is not None:
            return
        group = [c for c in self.conns if c.leads_to(nodeid)]
        ready = [c for c in group if c.open]
        if not ready or len(ready) < len(group):
            return  # none through yet, or one still in its handshake
        if len(ready) > 1 and not force and not all(c.tiebreak for c in ready):
            if nodeid not in self._undecided:
                timeout = self.node.config.monitor_timeout
                loop = self.node.loop
                self._undecided[nodeid] = loop.call_later(timeout, self._settle, nodeid, True)
            return
        timer = self._undecided.pop(nodeid, None)
        if timer is not None:
            timer.cancel()
        link = min(ready, key=lambda c: c.wire.pair_key)
        link.remote = self.node._link_up(nodeid, link)
        if not link.authenticated.done():
            link.authenticated.set_result(nodeid)
        for other in ready:
            if other is not link:
                other.close(f"{nodeid}: simultaneous connect, the other connection won")
        self._changed()

    def closed(self, conn: _Conn, reason: str) -> None:
        if conn.remote is not None and conn.remote.link is conn:
            conn.remote.lost(reason)
            return
        nodeid = conn._greeted_as or conn.expect
        if nodeid:
            self._settle(nodeid)  # a connection the others waited for is gone

    # -- dialling ------------------------------------------------------------

    def connect(self, remote: Remote) -> None:
        """Start connecting to a remote node known by ID."""
        task = self.node.spawn_task(self._dial_node(remote))
        self._dials[remote.id] = task
        task.add_done_callback(lambda t: self._dials.pop(remote.id, None))

    def forget(self, nodeid: str) -> None:
        """The node forgot a departed peer: so do we, but for a seed's address."""
        if nodeid not in self.seeds.values():
            self.addresses.pop(nodeid, None)

    def _changed(self) -> None:
        """Wake the dials waiting for a seed's or a node's identity."""
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def _dial_node(self, remote: Remote) -> None:
        interval = self.node.config.connect_interval
        try:
            async with asyncio.timeout(interval):
                addrs = await self._addresses_of(remote)
                if not addrs:
                    if not remote.is_up():
                        remote.lost("no known address")
                    return
                while not remote.is_up():
                    for addr in addrs:
                        try:
                            conn = await self.dial(addr, expect=remote.id)
                        except (OSError, ConnectionError) as e:
                            log.debug("node %s: dial %s failed: %s", self.node.id, addr, e)
                            if remote.is_up():
                                return  # connected the other way round meanwhile
                            continue
                        if conn.remote_id == remote.id or remote.is_up():
                            return
                    await asyncio.sleep(min(0.4, interval / 4) * random.uniform(0.9, 1.0))
        except TimeoutError:
            pass
        if not remote.is_up():
            remote.lost("connect timeout")

    async def _addresses_of(self, remote: Remote) -> list[str]:
        """Where a node listens: what we dialled before, else what the database knows."""
        while not remote.is_up():
            addrs = list(self.addresses.get(remote.id) or ())
            for addr in await self.node._db.lookup(remote.id):
                if addr not in addrs:
                    addrs.append(addr)
            if addrs or not self._seeds_pending:
                return addrs
            await self._pulse.wait()  # a seed not yet greeted may be the node we want
        return []

    async def dial(self, addr: str, expect: str | None = None) -> _Conn:
        """Connect to addr and wait until the connection is the link (it
        may wait for a twin first; ConnectionError if it is closed instead)."""
        host, port = parse_address(addr)
        loop = self.node.loop
        _, conn = await loop.create_connection(
            lambda: _Conn(self, peeraddr=addr, expect=expect), host, port
        )
        await asyncio.shield(conn.authenticated)
        return conn

    def keep_seed(self, addr: str) -> None:
        """Stay connected to a seed address for as long as the node lives."""
        parse_address(addr, "'seeds' entry")
        if addr not in self.seeds:
            self.seeds[addr] = ""
            self._seeds_pending.add(addr)
            self.node.spawn_task(self._seed_loop(addr))

    async def _seed_loop(self, addr: str) -> None:
        # Part B 5.2: at once, then 1.2-2.4 s doubling up to monitor_timeout
        cap = self.node.config.monitor_timeout
        delay = 0.0
        while addr in self.seeds:
            nodeid = self.seeds[addr]
            if nodeid and self.node.node_is_up(nodeid):
                await asyncio.sleep(min(0.5, cap))  # connected the other way round
                continue
            conn = None
            try:
                conn = await self.dial(addr)
            except (OSError, ConnectionError) as e:
                log.debug("node %s: seed %s: %s", self.node.id, addr, e)
            if addr in self._seeds_pending:
                self._seeds_pending.discard(addr)
                self._changed()
            if conn is not None:
                delay = 0.0
                await conn.finished
                continue
            delay = min(cap, delay * 2 if delay else 1.2 * (1 + random.random()))
            await asyncio.sleep(delay)

    async def close(self) -> None:
        self._closing = True
        for timer in self._undecided.values():
            timer.cancel()
        self._undecided.clear()
        for server in self.servers:
            server.close()
        for conn in list(self.conns):
            conn.close("node closed")
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()


def make_settings(node: Node, version: str) -> wire.Settings:
    cfg = node.config
    tls_server = tls_client = None
    if cfg.cert is not None:
        from .tls import ssl_contexts

        tls_server, tls_client = ssl_contexts(cfg.cert)
    if cfg.secret is None and cfg.cert is None:
        raise ConfigError(
            f"node {node.id!r} has neither a shared secret nor a certificate, so no other node "
            "can trust it: set 'secret' (aemp gensecret) or 'cert' (aemp gencert)"
        )
    try:
        return wire.Settings(
            nodeid=node.id,
            provider=f"aemp-py-{version}",
            secret=cfg.secret,
            tls_server=tls_server,
            tls_client=tls_client,
            auth_offer=cfg.auth_offer,
            auth_accept=cfg.auth_accept,
            framing_format=cfg.framing_format,
            max_packet=cfg.max_packet,
            heartbeat=max(
                wire.MIN_HEARTBEAT, cfg.monitor_timeout / 4
            ),  # 'monitor_timeout' <= 86400
        )
    except MessageError as e:  # pragma: no cover - Settings raises ConfigError
        raise ConfigError(str(e)) from e
