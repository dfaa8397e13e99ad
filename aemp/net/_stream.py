# One data connection in its stream phase: raw bytes both ways over the
# socket that authenticated as aemp-dataconn (docs/protocol.md, "Data
# connections"), with TLS when the handshake switched to it.
#
# The Conn that did the handshake hands its transport over (Conn.detach)
# and this Protocol takes its place. Flow control both ways, bounded by
# `limit` (the stream_buffer key): what arrives is kept until read, and
# reading from the socket pauses while `limit` bytes wait, so a slow
# reader holds at most `limit` plus one read; a writer waits in write()
# while the transport holds more than `limit` unsent bytes, and writes a
# big buffer in slices of `limit`, so it never queues more than that.
#
# Errors say whose doing the end was, as trio's streams do: after close()
# every call raises ClosedStreamError; a reset, a TLS error or a lost
# connection raise BrokenStreamError, with the cause. A clean end of the
# peer's bytes (FIN, or TLS close_notify) is not an error here: read()
# returns b"", and the layer above decides whether that end was clean.
#
# This module knows asyncio and the wire's StreamPhase, nothing else.

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import cast

from .._errors import BrokenStreamError, ClosedStreamError, RemoteProtocolError
from ..wire import StreamPhase

__all__ = ["RawStream", "local_pair"]

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: the close resets
LOST_WAIT = 1.0  # seconds a writer waits for a closing transport's connection_lost


def reset(transport: asyncio.BaseTransport) -> None:
    """Abort with a reset, so the peer hears of it at once (not as an end);
    a connection's abort too (net/_conn.py)."""
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    cast(asyncio.Transport, transport).abort()


class RawStream(asyncio.Protocol):
    """The stream phase of one data connection (see the module comment)."""

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        phase: StreamPhase,
        *,
        peer: str,
        dataconn_id: str,
        provider: str | None,
        limit: int,
        forget: Callable[[RawStream], None] | None = None,
    ) -> None:
        self.peer = peer  # the node ID at the other end
        self.dataconn_id = dataconn_id
        self.provider = provider  # what the peer's greeting said it runs
        self.limit = limit
        self.bytes_in = self.bytes_out = 0  # stream bytes (before TLS)
        self._forget = forget  # told once the stream has ended
        self._transport = t = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self._unwrap = phase.unwrap
        self._wrap = phase.wrap
        self._peer_closed = phase.peer_closed
        self._finish = phase.finish
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BrokenStreamError | None = None
        self._closed = False  # close() called
        self._read_paused = False
        self._write_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] = self._loop.create_future()  # connection_lost
        t.set_write_buffer_limits(high=limit, low=limit // 4)
        t.set_protocol(self)
        if phase.first:
            self._push(phase.first)
        self._check_tls_end()
        if t.is_closing():  # lost while it changed hands
            self.connection_lost(None)
        else:
            t.resume_reading()  # the Conn may have paused it

    # -- asyncio.Protocol ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._unwrap is not None:
            try:
                data = self._unwrap(data)
            except RemoteProtocolError as e:
                self._broken(f"TLS error: {e}", e)
                return
            self._check_tls_end()
        if data:
            self._push(data)

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.bytes_in += len(data)
        if self._size >= self.limit and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def _check_tls_end(self) -> None:
        if self._peer_closed is not None and self._peer_closed():
            self._eof = True
            self._wake_reader()

    def eof_received(self) -> bool:
        if self._unwrap is not None and not self._eof:
            # TCP ended without TLS's close_notify: a truncation
            self._broken("the peer ended the connection without closing TLS", None)
            return False
        self._eof = True
        self._wake_reader()
        return True  # we may still write (the peer only stopped sending)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._gone.done():
            self._gone.set_result(None)
        if not self._closed and self._error is None:
            if exc is not None or not self._eof:
                why = f"connection lost: {exc}" if exc else "the peer closed the connection"
                self._broken(why, exc)
            else:
                self._error = BrokenStreamError(
                    f"data stream {self.dataconn_id!r} with {self.peer!r}: connection closed"
                )
        self._wake_reader()
        self._wake_drain()
        if self._forget is not None:
            self._forget(self)
            self._forget = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- for the stream's owner -----------------------------------------------

    def _broken(self, why: str, cause: BaseException | None) -> None:
        if self._error is None:
            err = BrokenStreamError(f"data stream {self.dataconn_id!r} with {self.peer!r}: {why}")
            err.__cause__ = cause
            self._error = err
        reset(self._transport)
        self._wake_reader()
        self._wake_drain()

    def _wake_reader(self) -> None:
        fut = self._reader
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake_drain(self) -> None:
        fut = self._drain
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _check_closed(self) -> None:
        if self._closed:
            raise ClosedStreamError(f"data stream {self.dataconn_id!r} was closed by this side")

    @property
    def at_eof(self) -> bool:
        """True once every byte the peer sent was read and it sent no more."""
        return self._eof and not self._chunks

    async def read(self, max_bytes: int | None = None) -> bytes:
        """Up to max_bytes (None: what is there, one read's worth); b"" at the
        end of the peer's bytes. Waits while nothing is buffered."""
        while True:
            self._check_closed()
            if self._chunks:
                break
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        chunk = self._chunks.popleft()
        if max_bytes is not None and len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._size -= len(chunk)
        if self._read_paused and self._size < self.limit:
            self._read_paused = False
            self._transport.resume_reading()
        return chunk

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of data, waiting while the transport holds `limit` bytes."""
        limit = self.limit
        if type(data) is bytes and len(data) <= limit:
            pieces: list[bytes] | None = [data]  # the common case: no copy
        else:
            pieces = None
        view = memoryview(data).cast("B")
        for start in range(0, len(view), limit):
            self._check_closed()
            if self._error is not None:
                raise self._error
            if self._transport.is_closing():
                raise await self._lost()
            piece = pieces[0] if pieces is not None else bytes(view[start : start + limit])
            self.bytes_out += len(piece)
            if self._wrap is not None:
                try:
                    piece = self._wrap(piece)
                except RemoteProtocolError as e:
                    self._broken(f"TLS error: {e}", e)
                    raise cast(BrokenStreamError, self._error) from e
            self._transport.write(piece)
            while self._write_paused and self._error is None and not self._closed:
                self._drain = self._loop.create_future()
                try:
                    await self._drain
                finally:
                    self._drain = None
        self._check_closed()
        if self._error is not None:
            raise self._error

    async def _lost(self) -> BrokenStreamError:
        """The transport closes under us (the socket failed: a reset, the
        peer gone) and drops what is written to it; its connection_lost,
        due in a loop turn, tells why. Waiting for that also yields: a
        writer that never fills its buffer would otherwise spin, never
        letting the loop (or its own timeout) run."""
        if not self._gone.done():
            await asyncio.wait([self._gone], timeout=LOST_WAIT)
        if self._error is None:
            self._broken("the connection was lost", None)
        assert self._error is not None
        return self._error

    def close(self, abort: bool = False) -> None:
        """End the stream: what was written still goes out (unless abort);
        with TLS a close_notify follows it. Every later call raises
        ClosedStreamError."""
        if self._closed:
            return
        self._closed = True
        t = self._transport
        if not abort and self._error is None and self._finish is not None:
            t.write(self._finish())  # TLS's close_notify
        if abort:
            reset(t)
        else:
            t.close()
        self._chunks.clear()
        self._wake_reader()
        self._wake_drain()

    async def wait_closed(self, reset_after: float) -> bool:
        """After close(): wait until what was written is out and the socket
        is closed; after `reset_after` seconds (a peer that reads nothing) reset
        it. True if it closed in time."""
        if not self._gone.done():
            try:
                async with asyncio.timeout(reset_after):
                    await asyncio.shield(self._gone)
            except TimeoutError:
                reset(self._transport)
                return False
        return True


async def local_pair(limit: int) -> tuple[RawStream, RawStream]:
    """Two RawStreams over a socket pair of this process, joined to each
    other (a data stream within one node)."""
    loop = asyncio.get_running_loop()
    ends = []
    for i, sock in enumerate(socket.socketpair()):
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
        phase = StreamPhase(b"", None, None, None, None)
        ends.append(
            RawStream(
                transport, phase, peer="", dataconn_id=f"local{i}", provider=None, limit=limit
            )
        )
    return ends[0], ends[1]
