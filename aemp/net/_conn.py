# One connection to another node: asyncio glue between a socket and the
# sans-IO protocol core (aemp.wire).
#
# One Conn per TCP connection, either direction. Until the handshake ends
# it feeds bytes to wire.Connection and acts on its events; after it, bytes
# go through the core's fast path straight to the Inbox the node gave for
# the peer (aemp/_seam.py), whose bound receive the connection keeps, so a
# read costs one call. Outgoing packets are encoded at once (so a bad
# message raises in the caller's snd). A lone packet is written at once (a
# request or a reply waits for nothing); the ones behind it are collected
# and written together at the end of the loop turn, so a burst of small
# sends costs two system calls. A burst made while delivering what the
# peer sent (replies to its requests) goes out every 256 packets, so that
# the peer, which waits for them, can work on the first while we make the
# rest. Heartbeats and limits live here: the core has no clock.
#
# Flow control: a read longer than READ_SLICE is fed a slice per loop turn
# (reading paused meanwhile), so delivery never keeps timers waiting long;
# the node pauses and resumes reading (Link.pause_reading, its queue_limit)
# and a paused reader does not time its peer out. On the sending side the
# transport's high-water mark is send_buffer (drained() waits under a
# quarter of it); a peer that takes none of our bytes for stall_timeout,
# or lets max_unsent pile up, is reset.
#
# Until the handshake ends a connection counts among those the network
# bounds (max_handshakes, Network.handshake_started), which may reset it
# quietly (drop) to make room; it gives up after handshake_timeout.
#
# Every timer and deadline is on the event loop's clock (loop.time,
# loop.call_later), never on time.monotonic: a loop whose clock is virtual
# (aemp.testing) drives the handshake timeout and the heartbeats.
#
# A connection that fails after the handshake is aborted (reset, its
# unsent data dropped): its monitors fire, so nothing queued on it may
# arrive later. Only a close on purpose writes out what is queued.
#
# This module knows the network (aemp/net/_network.py) and the seam, never
# the kernel or the node.

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from .. import wire
from .._addr import format_address
from .._errors import Overloaded, RemoteProtocolError
from .._seam import Inbox
from ._stream import reset

if TYPE_CHECKING:
    from .._config import Config
    from .._seam import LinkOwner


class ConnOwner(Protocol):
    """What a connection asks of the network it belongs to (Network has it):
    declared here, so that this module does not import the network's."""

    owner: LinkOwner
    loop: asyncio.AbstractEventLoop
    config: Config
    settings: wire.Settings
    conns: set[Conn]

    def greeted(self, conn: Conn, nodeid: str) -> str | None: ...

    def authenticated(self, conn: Conn) -> None: ...

    def closed(self, conn: Conn, reason: str) -> None: ...

    def handshake_started(self, conn: Conn, host: str | None) -> str | None: ...

    def handshake_failed(self, conn: Conn, reason: str) -> None: ...

    def stream_greeted(self, conn: Conn, nodeid: str) -> str | None: ...

    def stream_authenticated(self, conn: Conn, ev: wire.Authenticated) -> None: ...


log = logging.getLogger("aemp.transport")

# What one read hands the node in one loop turn: a 256 KiB read of small
# packets is thousands of messages, and delivering them in one go kept
# timers and heartbeats waiting for as long as the handlers took. The rest
# of the read is fed a slice per loop turn, with reading paused meanwhile.
READ_SLICE = 16 * 1024
CHUNK_PACKETS = 256  # a burst of replies in a read is written in parts of this many packets
# A packet sent more than this long (loop time) after a write at once is
# taken to be lone: more than a millisecond, as the packets of one burst are
# made faster than that. uvloop's clock counts whole milliseconds, so this
# means two ticks (between 1 and 2 ms): never less than a millisecond, or a
# burst that crossed a tick would be written packet by packet.
LONE_GAP = 0.0015


class Conn(asyncio.Protocol):
    """One TCP connection to another node."""

    def __init__(
        self,
        net: ConnOwner,
        peeraddr: str,
        expect: str | None = None,
        dataconn_id: str | None = None,
    ) -> None:
        self.net = net
        self.loop = loop = net.loop
        self._now = loop.time
        self.peeraddr = peeraddr
        self.expect = expect  # the node ID we dialled for, if any
        self.remote_id = ""
        # where what arrives goes (the Inbox's receive), once authenticated
        self._deliver: Callable[[Iterable[list[Any]]], None] | None = None
        self.is_link = False  # made the node's link (LinkOwner.link_up)
        self.bytes_in = self.bytes_out = 0  # read; packets written (before TLS)
        self.packets_out = 0  # packets written (what comes in is counted by the Inbox)
        self.dataconn_id = dataconn_id  # dialled for a data connection
        self.wire = wire.Connection(net.settings, peeraddr=peeraddr, dataconn_id=dataconn_id)
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
        self._last_in = self._last_out = loop.time()
        self._hb: float | None = None
        self._hb_timeout = 0.0
        self._greeted_as = ""
        # flow control (the data phase): reading paused by the node (its
        # queue_limit), the rest of a read fed a slice per loop turn, and
        # the peer's progress in taking what we wrote (stall_timeout)
        self._node_paused = False
        self._rest: bytes | memoryview = b""
        self._more_handle: asyncio.Handle | None = None
        self._written = 0  # bytes handed to the transport (after TLS)
        self._taken = 0  # of those, taken by the peer when last looked
        self._progress = loop.time()  # when the peer last took bytes (or none were unsent)
        self._writing_paused = False  # the transport's buffer passed send_buffer
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._max_unsent = net.config.max_unsent
        # past max_unsent the link refuses snd (Overloaded) until the buffer
        # drains under a quarter of send_buffer; past twice it, what the node
        # itself sends (requests, replies) has overrun it too: reset
        self._over = False
        self.tiebreak = False  # the peer settles twin connections by the nonce rule
        # resolved when this connection becomes the node's link (not merely
        # authenticated: it may wait for a twin, see Network._settle)
        self.authenticated: asyncio.Future[str] = loop.create_future()
        self.finished: asyncio.Future[str] = loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        host = None  # dialled; accepted: where from (Network.handshake_started)
        if self.expect is None and self.peeraddr == "?":
            peer = t.get_extra_info("peername")
            host = "?"
            if isinstance(peer, tuple):
                host = peer[0]
                self.peeraddr = format_address(peer[0], peer[1])
            elif t.get_extra_info("sockname") is not None:  # a unix socket: the peer has no name
                host = "unix"
                self.peeraddr = "unix:"
            if host != "?":
                self.wire = wire.Connection(self.net.settings, peeraddr=self.peeraddr)
                self._encode = self.wire.encode
                self._encode_message = self.wire.encode_message
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                if self.net.config.nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:  # pragma: no cover - not a TCP socket
                pass
        self.net.conns.add(self)
        refusal = self.net.handshake_started(self, host)
        if refusal:  # too many in their handshake (logged there, per burst)
            self.drop(refusal)
            return
        self.wire.start()
        t.write(self.wire.data_to_send())
        timeout = self.net.config.handshake_timeout
        self._timer = self.loop.call_later(timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self._last_in = self._now()
        self.bytes_in += len(data)
        if self._receive is not None:  # the data phase
            if len(data) > READ_SLICE:  # the rest a slice per loop turn, not reading meanwhile
                self._rest = memoryview(data)[READ_SLICE:]  # a view: no copy of the rest
                data = data[:READ_SLICE]
                if not self._node_paused:
                    cast(asyncio.Transport, self.transport).pause_reading()
                    self._more_handle = self.loop.call_soon(self._more)
            self._feed(data)
            return
        if self.closed:
            return
        try:
            self.wire.receive_data(data)
            self._handshake()
        except RemoteProtocolError as e:
            self.fail(str(e))

    def _feed(self, data: bytes) -> None:
        receive = self._receive
        if receive is None:
            return
        if self._flush_handle is None:  # no batch open (nothing queued)
            self._wrote = False  # the first reply may go at once
        self._in_read = True
        try:
            self._deliver(receive(data))  # type: ignore[misc]
        except RemoteProtocolError as e:
            self.fail(str(e))
            return
        finally:
            self._in_read = False
        if self._chunks:  # replies go out now, not a loop turn later
            self._flush()

    def _more(self) -> None:
        # the next slice of a long read, a loop turn after the last
        self._more_handle = None
        if self.closed or self._node_paused:
            return
        rest = self._rest
        if len(rest) > READ_SLICE:
            self._rest = rest[READ_SLICE:]
            data = bytes(rest[:READ_SLICE])
            self._more_handle = self.loop.call_soon(self._more)
        else:
            self._rest = b""
            data = bytes(rest)
        self._feed(data)
        if not self._rest and not self._node_paused and not self.closed:
            cast(asyncio.Transport, self.transport).resume_reading()

    # -- flow control -----------------------------------------------------

    def pause_reading(self) -> None:
        """The node holds too much (queue_limit): read nothing until resume_reading."""
        if self._node_paused or self.closed:
            return
        self._node_paused = True
        if self._more_handle is not None:
            self._more_handle.cancel()
            self._more_handle = None
        elif not self._rest and self.transport is not None:
            self.transport.pause_reading()  # (with a rest it is paused already)

    def resume_reading(self) -> None:
        """Read again; the peer's silence while we did not read was our own."""
        if not self._node_paused or self.closed:
            return
        self._node_paused = False
        self._last_in = self._now()
        if self._rest:
            self._more_handle = self.loop.call_soon(self._more)
        elif self.transport is not None:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # asyncio: the transport's buffer passed the high-water mark (send_buffer)
        self._writing_paused = True

    def resume_writing(self) -> None:
        # asyncio: the buffer fell under the low-water mark (send_buffer / 4)
        self._writing_paused = False
        if self._over:
            self._over = False
            if self.send_message == self._refuse:
                self.send_message = self._send_message
        self._wake_drain()

    def drained(self) -> asyncio.Future[None] | None:
        """None if the link can take more now, else a future resolved when
        its unsent bytes fall under a quarter of send_buffer (or it is lost).

        A transport that is closing (its socket failed; connection_lost is
        due in a loop turn) drops what is written to it and never pauses:
        its drain waits for that loss, or a loop of snd and drain would
        spin, never letting the loop tell of it."""
        if self.closed:
            return None
        if not self._writing_paused:
            transport = self.transport
            if transport is None or not transport.is_closing():
                return None
        fut: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(fut)
        return fut

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

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
                if self.wire.is_dataconn:
                    refusal = self.net.stream_greeted(self, ev.greeting.nodeid)
                else:
                    refusal = self.net.greeted(self, ev.greeting.nodeid)
                if refusal:
                    self.close(refusal)
                    return
            elif isinstance(ev, wire.Authenticated):
                if ev.dataconn_id is not None:
                    if self._timer is not None:
                        self._timer.cancel()
                    self.open = True
                    self.remote_id = ev.remote_nodeid
                    self.net.stream_authenticated(self, ev)
                else:
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
        encoder.full = self._full
        self._append = encoder.append_message
        self.remote_id = ev.remote_nodeid
        self.tiebreak = ev.greeting.tiebreak
        if self.transport is not None:
            high = self.net.config.send_buffer
            self.transport.set_write_buffer_limits(high=high, low=high // 4)
        own_hb = self.net.settings.heartbeat
        if own_hb is not None and ev.remote_heartbeat is not None:
            # we write often enough for the stricter of the two sides, and
            # give up on our own clock: what the peer announced (within the
            # limits the greeting check enforces) cannot make us wait longer
            self._hb = min(own_hb, ev.remote_heartbeat)
            self._hb_timeout = self.net.config.monitor_timeout
            self._timer = self.loop.call_later(self._hb, self._heartbeat)
        log.debug(
            "node %s: connected to %s (%s, %s/%s%s)",
            self.net.owner.id,
            ev.remote_nodeid,
            ev.method,
            ev.send_framing,
            ev.recv_framing,
            ", tls" if ev.tls else "",
        )
        self.net.authenticated(self)
        # bytes that arrived right behind the auth line are packets already
        ev2 = self.wire.next_event()
        deliver = self._deliver
        if isinstance(ev2, wire.Packets) and deliver is not None and not self.closed:
            deliver(ev2.packets)
        if not self.closed and self._deliver is not None:
            self._receive, self._wrap = self.wire.data_phase()

    def _handshake_timeout(self) -> None:
        timeout = self.net.config.handshake_timeout
        self.fail(
            f"Connection timed out (handshake not done within handshake_timeout, {timeout:g} s)"
        )

    def _heartbeat(self) -> None:
        now = self._now()
        if self._node_paused:
            self._last_in = now  # we do not read: the peer's silence is our own doing
        silent = now - self._last_in
        if silent >= self._hb_timeout:
            self.fail("heartbeat timeout")
            return
        # a peer that takes none of what we wrote for stall_timeout is not
        # reading at all; one that takes some is merely slower, and stays
        unsent = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if not unsent:
            self._progress = now
        elif self._written - unsent != self._taken:
            self._taken = self._written - unsent
            self._progress = now
        elif now - self._progress >= self.net.config.stall_timeout:
            self.fail(
                f"peer is not reading: it took none of {unsent} unsent bytes "
                f"for stall_timeout ({self.net.config.stall_timeout:g} s)"
            )
            return
        assert self._hb is not None
        if now - self._last_out >= self._hb and not self._chunks:
            self.send([""])
        # look again after hb, or at the deadline if that comes first
        wait = min(self._hb, self._hb_timeout - silent)
        self._timer = self.loop.call_later(wait, self._heartbeat)

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
            if len(chunks) >= (CHUNK_PACKETS if self._in_read else wire.OUT_PACKETS) or (
                len(data) > wire.OUT_BYTES
            ):
                self._full()
        elif self._now() - self._last_out > LONE_GAP:
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
            if len(chunks) >= (CHUNK_PACKETS if self._in_read else wire.OUT_PACKETS) or (
                len(data) > wire.OUT_BYTES
            ):
                self._full()
        elif self._now() - self._last_out > LONE_GAP:
            self._write_now(data)  # written at once a while ago: a later loop turn
        else:
            self._chunks.append(data)
            self._batch()

    def _batch(self) -> None:
        # A batch is open until _flush. Outside a read, send_message is the
        # encoder's own append into the batch meanwhile: one call per packet
        # of a burst instead of two. (In a read, bursts go out in parts.)
        self._flush_handle = self.loop.call_soon(self._flush)
        if not self._in_read and self._append is not None and not self._over:
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
        self._last_out = self._now()
        wrap = self._wrap
        self.bytes_out += len(data)
        self.packets_out += 1
        if wrap is not None:
            data = wrap(data)
        self._written += len(data)
        transport.write(data)
        if transport.get_write_buffer_size() > self._max_unsent and self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)  # it fails us, from the loop

    def _full(self) -> None:
        # The batch is long or holds a large packet (the encoder's full(),
        # or the same test in send). It is written now, so that a burst
        # within one loop turn meets max_unsent too: past it, the next snd
        # is refused. (Failing the link, past twice it, waits for _flush.)
        self._write_chunks()
        if self._over:
            return
        assert self.transport is not None
        unsent = self.transport.get_write_buffer_size()
        if unsent > self._max_unsent:
            self._over = True
            self.send_message = self._refuse
            log.debug(
                "node %s: %d bytes unsent to %s in one loop turn, over max_unsent: snd refused",
                self.net.owner.id,
                unsent,
                self.remote_id,
            )

    def _write_chunks(self) -> None:
        # a long burst of replies goes out in parts, so that the peer can
        # start on it while we go on
        self.packets_out += len(self._chunks)
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._last_out = self._now()
        wrap = self._wrap
        assert self.transport is not None
        self.bytes_out += len(data)
        if wrap is not None:
            data = wrap(data)
        self._written += len(data)
        self.transport.write(data)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.send_message = self._refuse if self._over else self._send_message  # batch over
        transport = self.transport
        if self.closed or transport is None:
            return
        if self._chunks:
            self.packets_out += len(self._chunks)
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._last_out = self._now()
            wrap = self._wrap
            self.bytes_out += len(data)
            if wrap is not None:
                data = wrap(data)
            self._written += len(data)
            transport.write(data)
        self._wrote = False
        # checked here, from the loop, never inside a caller's send
        unsent = transport.get_write_buffer_size()
        if unsent > self._max_unsent:
            if unsent > 2 * self._max_unsent:
                self.fail(
                    f"peer is not reading fast enough: {unsent} bytes unsent, more than "
                    f"twice max_unsent ({self._max_unsent} bytes)"
                )
            elif not self._over:
                self._over = True
                self.send_message = self._refuse
                log.debug(
                    "node %s: %d bytes unsent to %s, over max_unsent: snd refused",
                    self.net.owner.id,
                    unsent,
                    self.remote_id,
                )

    def _refuse(self, portname: str, msg: tuple[Any, ...]) -> None:
        """send_message while the link holds more than max_unsent: Overloaded."""
        unsent = self.transport.get_write_buffer_size() if self.transport is not None else 0
        raise Overloaded(
            f"snd to {self.remote_id}#{portname}: the link holds {unsent} unsent bytes, "
            f"more than max_unsent ({self._max_unsent}); nothing was sent: await "
            f"drain({self.remote_id!r}) and send again"
        )

    # -- closing ----------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close on purpose; pending output is written first."""
        if self.closed:
            return
        if self._flush_handle is not None:
            self._flush()
        if not self.closed:  # _flush fails the link if it holds twice max_unsent
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
            self.net.handshake_failed(self, reason)  # logged, a few per burst
            self._shutdown(reason)
            return
        self._shutdown(reason, abort=True)

    def drop(self, reason: str) -> None:
        """Reset a connection in its handshake, without a word or a log
        line: the network closes the oldest over a cap (and logs that)."""
        if not self.closed:
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
        if self._more_handle is not None:
            self._more_handle.cancel()
        self._rest = b""
        self._wake_drain()
        transport = self.transport
        if transport is not None:
            if abort and not transport.is_closing():
                reset(transport)
            else:
                transport.close()
        self.net.conns.discard(self)
        self.finished.set_result(reason)
        if not self.authenticated.done():
            self.authenticated.set_exception(ConnectionError(reason))
            self.authenticated.exception()  # retrieved: a failed dial is reported elsewhere
        self.net.closed(self, reason)

    def detach(self) -> tuple[asyncio.Transport, wire.StreamPhase]:
        """Hand the socket of an authenticated data connection over (to a
        net.RawStream, which must take it in the same loop turn): this
        Conn is done with it, without closing it."""
        phase = self.wire.stream_phase()
        transport = self.transport
        assert transport is not None and not self.closed
        transport.pause_reading()  # until the new protocol is in place
        self.closed = True
        self.why = "handed over to a data stream"
        if self._timer is not None:
            self._timer.cancel()
        self.net.conns.discard(self)
        self.finished.set_result(self.why)
        if not self.authenticated.done():
            self.authenticated.set_result(self.remote_id)
        return transport, phase

    def take_inbox(self, inbox: Inbox) -> None:
        """What arrives from now on goes to `inbox` (its bound receive is kept)."""
        self._deliver = inbox.receive

    def describe(self) -> str:
        return self.remote_id or self.expect or self.peeraddr

    def leads_to(self, nodeid: str) -> bool:
        """Alive, a link (not a data connection) and with `nodeid` at the
        other end, as far as we know yet."""
        if self.closed or self.dataconn_id is not None or self.wire.is_dataconn:
            return False
        if self._greeted_as:
            return self._greeted_as == nodeid
        return self.expect == nodeid
