# The connection state machine, sans-IO in the style of h11: the caller
# feeds received bytes in with receive_data(), pulls events out with
# next_event(), and writes whatever data_to_send() returns. No clock, no
# socket: timeouts and closing are the caller's.
#
# Both sides are equal (each sends its greeting at once and its auth line
# after reading the peer's greeting), so there is no client or server role
# here; with TLS, the nonces decide which side is the TLS client.
#
# The handshake is event by event; the data phase has a fast path instead:
# encode() and wrap() to batch outgoing packets into one write, and
# receive_packets() (or receive_iter(), one packet at a time) to decode
# incoming bytes straight into packets.
#
# A data connection (protocol aemp-dataconn, docs/protocol.md) has the
# same handshake; its dialler names it with dataconn_id. Once
# authenticated it carries raw bytes: stream_phase() hands out what came
# behind the auth line and the functions that take TLS off and put it on.

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import AuthError, ConfigError, LocalProtocolError, RemoteProtocolError
from ._auth import auth_token, choose_auth_method, parse_auth_line, verify_auth_line
from ._decoding import brief
from ._events import (
    NEED_DATA,
    Authenticated,
    ConnectionClosed,
    Event,
    GreetingReceived,
    NeedData,
    Packets,
)
from ._framing import Decoder, Encoder, choose_framing, make_decoder, make_encoder
from ._greeting import (
    DATACONN,
    TIEBREAK,
    Greeting,
    check_dataconn_id,
    check_line_start,
    make_line1,
    make_nonce,
    parse_greeting,
    parse_line1,
    take_line,
)
from ._settings import Settings

if TYPE_CHECKING:
    from ._tls import TlsLayer


class State(enum.Enum):
    IDLE = "idle"  # created; start() not called yet
    GREETING = "greeting"  # our greeting is queued; reading the peer's two lines
    GREETED = "greeted"  # GreetingReceived handed out; the caller may still hang up
    TLS_HANDSHAKE = "tls_handshake"  # switching to TLS before the auth lines
    AUTH = "auth"  # our auth line is queued; reading and checking the peer's
    OPEN = "open"  # data phase: packets both ways
    CLOSED = "closed"  # the peer ended the stream, or close() was called
    FAILED = "failed"  # a protocol error was raised; nothing more will happen


_S = State
_TRANSITIONS: dict[State, frozenset[State]] = {
    _S.IDLE: frozenset({_S.GREETING, _S.CLOSED, _S.FAILED}),
    _S.GREETING: frozenset({_S.GREETED, _S.CLOSED, _S.FAILED}),
    _S.GREETED: frozenset({_S.TLS_HANDSHAKE, _S.AUTH, _S.CLOSED, _S.FAILED}),
    _S.TLS_HANDSHAKE: frozenset({_S.AUTH, _S.CLOSED, _S.FAILED}),
    _S.AUTH: frozenset({_S.OPEN, _S.CLOSED, _S.FAILED}),
    _S.OPEN: frozenset({_S.CLOSED, _S.FAILED}),
    _S.CLOSED: frozenset(),
    _S.FAILED: frozenset(),
}
HANDSHAKE_STATES = frozenset({_S.IDLE, _S.GREETING, _S.GREETED, _S.TLS_HANDSHAKE, _S.AUTH})


@dataclass(frozen=True)
class StreamPhase:
    """How an authenticated data connection carries bytes from now on.

    ``first`` is plaintext that came behind the peer's auth line. With TLS,
    ``unwrap(raw)`` turns bytes read into plaintext (b"" is the end of the
    stream) and ``wrap(data)`` plaintext into bytes to write, and
    ``peer_closed()`` tells whether the peer ended the TLS session, and
    ``finish()`` gives the close_notify to write last; without TLS all four
    are None and the bytes are the stream itself.
    """

    first: bytes
    unwrap: Callable[[bytes], bytes] | None
    wrap: Callable[[bytes], bytes] | None
    peer_closed: Callable[[], bool] | None
    finish: Callable[[], bytes] | None = None


class _NotOpen:
    """The encoder before the send framing is known."""

    name = ""

    def encode(self, packet: Sequence[Any]) -> bytes:
        raise LocalProtocolError("cannot encode packets before the handshake is complete")

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes:
        return self.encode([portname, *msg])

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.full: Callable[[], None] = lambda: None

    def append_message(self, portname: str, msg: Sequence[Any]) -> None:
        self.encode([portname, *msg])


class Connection:
    """One aemp connection, either direction, as a sans-IO state machine.

    ``peeraddr`` is the peer's address as this side sees it ("host:port"),
    sent in our greeting. After a RemoteProtocolError, data_to_send() still
    returns what was queued before it (our auth line, a TLS alert), which a
    transport may flush before closing, as Perl does.
    """

    def __init__(
        self, settings: Settings, *, peeraddr: str, dataconn_id: str | None = None
    ) -> None:
        if not isinstance(settings, Settings):
            raise ConfigError(f"settings must be an aemp.wire.Settings (got {brief(settings, 60)})")
        if not isinstance(peeraddr, str) or any(c in peeraddr for c in ";\r\n"):
            raise ConfigError(
                f"peeraddr must be a 'host:port' str without ';' (got {brief(peeraddr, 60)})"
            )
        if dataconn_id is not None:
            try:
                check_dataconn_id(dataconn_id)
            except RemoteProtocolError as e:
                raise ConfigError(str(e)) from None
            if ";" in dataconn_id:
                raise ConfigError(f"dataconn_id must not hold ';' (got {dataconn_id!r})")
        self.settings = settings
        self.peeraddr = peeraddr
        self.dataconn_id = dataconn_id  # we dial a data connection, not a link
        self._state = State.IDLE
        self._rbuf = bytearray()  # received plaintext not yet processed
        self._wbuf = bytearray()  # queued output, ahead of anything still inside TLS
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._line1 = b""
        self._line2 = b""
        self._remote_line1: bytes | None = None
        self._remote_line2 = b""
        self._greeting: Greeting | None = None
        self._tls: TlsLayer | None = None
        self._send_method = ""
        self._send_framing = ""
        self._encoder: Encoder | _NotOpen = _NotOpen()
        self._decoder: Decoder | None = None
        self._packets: list[list[Any]] = []  # decoded, not yet handed out

    # -- state ----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshake_done(self) -> bool:
        """True once Authenticated was returned (even if closed since)."""
        return self._decoder is not None

    @property
    def remote_greeting(self) -> Greeting | None:
        return self._greeting

    @property
    def pair_key(self) -> bytes:
        """The smaller of the two nonce lines, once the peer's greeting is in:
        the same on both ends of this connection and unlike any other
        connection's, so two nodes with two connections between them pick
        the same one by it without a word (docs/protocol.md section 11)."""
        if self._greeting is None:
            raise LocalProtocolError("pair_key needs the peer's greeting")
        return min(self._line2, self._remote_line2)

    @property
    def send_framing(self) -> str:
        """The framing we send in, once the peer's greeting is in ("" before)."""
        return self._send_framing

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version, None without TLS."""
        return self._tls.version if self._tls is not None else None

    def _set_state(self, new: State) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"internal error: no transition {self._state} -> {new}")
        self._state = new

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        if self._state is not State.FAILED:  # the decoder may have told us already
            self._set_state(State.FAILED)

    # -- handshake, event by event ----------------------------------------------

    def start(self) -> None:
        """Queue our greeting; call once, as soon as the connection exists."""
        if self._state is not State.IDLE:
            raise LocalProtocolError(f"start() called twice (state {self._state.value})")
        s = self.settings
        options: list[tuple[str, str | None]] = [
            ("provider", s.provider),
            ("peeraddr", self.peeraddr),
            ("mproto", "1"),
            ("gproto", "1"),
        ]
        if s.tls:
            options.append(("tls", "1.0"))
        if s.heartbeat is not None:
            hb = s.heartbeat
            options.append(("hb", str(int(hb)) if hb == int(hb) else repr(float(hb))))
        options.append(("tiebreak", TIEBREAK))
        if s.network is not None:
            options.append(("network", s.network))
        if self.dataconn_id is None:
            self._line1 = make_line1(s.nodeid, s.auth_accept, s.framing_format, options)
        else:
            options.append(("dataconn_id", self.dataconn_id))
            self._line1 = make_line1(
                s.nodeid, s.auth_accept, s.framing_format, options, protocol=DATACONN
            )
        self._line2 = make_nonce()
        self._wbuf += self._line1 + b"\n" + self._line2 + b"\n"
        self._set_state(State.GREETING)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer ended the stream."""
        if self._state is State.CLOSED or self._state is State.FAILED:
            return
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after the end of the stream")
            return
        if not data:
            self._eof = True
        if self._tls is not None:
            self._tls.receive(data)
        else:
            self._rbuf += data

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises RemoteProtocolError (or its
        subclass AuthError) when the peer breaks the protocol."""
        if self._state is State.FAILED:
            raise LocalProtocolError(f"the connection failed earlier: {self._error}")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _next_event(self) -> Event | NeedData:
        while True:
            state = self._state
            if state is State.OPEN:
                return self._open_event()
            if state is State.GREETING:
                return self._read_greeting()
            if state is State.GREETED:
                self._begin_auth()
            elif state is State.TLS_HANDSHAKE:
                if not self._tls_handshake():
                    return self._need_data("TLS handshake")
            elif state is State.AUTH:
                return self._read_auth()
            elif state is State.CLOSED:
                return ConnectionClosed()
            else:
                raise LocalProtocolError("call start() before next_event()")

    def _need_data(self, waiting_for: str) -> NeedData:
        if self._eof or (self._tls is not None and self._tls.peer_closed):
            raise RemoteProtocolError(
                f"the peer closed the connection during the handshake (waiting for {waiting_for})"
            )
        return NEED_DATA

    def _read_greeting(self) -> Event | NeedData:
        buf = self._rbuf
        if self._remote_line1 is None:
            check_line_start(buf)
            line1 = take_line(buf, "greeting line 1")
            if line1 is None:
                return self._need_data("greeting line 1")
            parse_line1(line1)  # fail early on a wrong protocol or version
            self._remote_line1 = line1
        line2 = take_line(buf, "greeting line 2")
        if line2 is None:
            return self._need_data("greeting line 2")
        self._remote_line2 = line2
        if self._remote_line1 == self._line1 and line2 == self._line2:
            raise AuthError("authentication error, echo attack? the peer sent our own greeting")
        self._greeting = parse_greeting(self._remote_line1, line2)
        if self.dataconn_id is not None and self._greeting.protocol == DATACONN:
            raise RemoteProtocolError(
                f"both sides greeted with {DATACONN!r}: one of them must be a listener"
            )
        self._set_state(State.GREETED)
        return GreetingReceived(self._greeting)

    def _begin_auth(self) -> None:
        s, greeting = self.settings, self._greeting
        assert greeting is not None
        self._send_framing = choose_framing(greeting.framings, s.framing_format)
        use_tls = s.tls and greeting.tls
        self._send_method = choose_auth_method(
            greeting.auth_accept, s.auth_offer, tls=use_tls, have_secret=s.secret_bytes is not None
        )
        if not use_tls:
            self._wbuf += self._auth_line()
            self._set_state(State.AUTH)
            return
        if self._remote_line2 == self._line2:
            raise RemoteProtocolError("the peer's nonce equals ours: cannot choose TLS roles")
        from ._tls import TlsLayer  # ssl imports socket: only when TLS is used

        client = self._line2 < self._remote_line2  # Perl's `lt` on the base64 text
        context = s.tls_client if client else s.tls_server
        assert context is not None
        tls = self._tls = TlsLayer(context, server_side=not client)
        if self._rbuf:  # the peer's first TLS bytes came with its greeting
            tls.receive(bytes(self._rbuf))
            self._rbuf.clear()
        if self._eof:
            tls.receive(b"")
        self._set_state(State.TLS_HANDSHAKE)

    def _auth_line(self) -> bytes:
        s = self.settings
        own, remote = (self._line1, self._line2), (self._remote_line1 or b"", self._remote_line2)
        token = auth_token(self._send_method, s.secret_bytes, own, remote)
        return b"%s;%s;%s\n" % (self._send_method.encode(), token, self._send_framing.encode())

    def _tls_handshake(self) -> bool:
        tls = self._tls
        assert tls is not None
        try:
            done = tls.handshake()
        finally:  # an alert for the peer is output too
            self._wbuf += tls.take_output()
        if done:
            tls.write(self._auth_line())
            self._wbuf += tls.take_output()
            self._set_state(State.AUTH)
        return done

    def _read_auth(self) -> Event | NeedData:
        tls = self._tls
        if tls is not None:
            self._rbuf += tls.read(authenticated=False)
            self._wbuf += tls.take_output()
        line = take_line(self._rbuf, "auth line")
        if line is None:
            return self._need_data("the auth line")
        s, greeting = self.settings, self._greeting
        assert greeting is not None and self._remote_line1 is not None
        auth = parse_auth_line(line)
        verify_auth_line(
            auth,
            accept=s.auth_accept,
            tls=tls is not None,
            secret=s.secret_bytes,
            own=(self._line1, self._line2),
            remote=(self._remote_line1, self._remote_line2),
        )
        if auth.framing not in s.framing_format:
            raise RemoteProtocolError(
                f"the peer will send framing {auth.framing!r}, which we did not offer "
                f"(we offered {list(s.framing_format)})"
            )
        self._encoder = make_encoder(self._send_framing, s.max_packet, s.max_objects)
        self._decoder = make_decoder(auth.framing, s.max_packet, s.max_objects)
        self._decoder.on_error = self._data_error
        self._set_state(State.OPEN)
        return Authenticated(
            remote_nodeid=greeting.nodeid,
            greeting=greeting,
            method=auth.method,
            send_framing=self._send_framing,
            recv_framing=auth.framing,
            tls=tls is not None,
            remote_heartbeat=greeting.heartbeat,
            dataconn_id=self.dataconn_id or greeting.dataconn_id,
        )

    @property
    def is_dataconn(self) -> bool:
        """True for a data connection (either side), once the peer's greeting is in."""
        greeting = self._greeting
        return self.dataconn_id is not None or (
            greeting is not None and greeting.protocol == DATACONN
        )

    def stream_phase(self) -> StreamPhase:
        """The raw-byte phase of an authenticated data connection: use only
        this (and close()) from now on."""
        if self._state is not State.OPEN or not self.is_dataconn:
            raise LocalProtocolError(
                f"no stream phase: state {self._state.value}, "
                f"{'a data connection' if self.is_dataconn else 'a node link'}"
            )
        tls = self._tls
        first = bytes(self._rbuf)
        self._rbuf.clear()
        if tls is None:
            return StreamPhase(first, None, None, None, None)
        first += tls.read(authenticated=True)

        def unwrap(data: bytes) -> bytes:
            tls.receive(data)
            return tls.read(authenticated=True)

        def wrap(data: bytes) -> bytes:
            tls.write(data)
            return tls.take_output()

        def finish() -> bytes:
            tls.close()
            return tls.take_output()

        return StreamPhase(first, unwrap, wrap, lambda: tls.peer_closed, finish)

    # -- data phase -------------------------------------------------------------

    def _open_event(self) -> Event | NeedData:
        packets = self._decode_buffered()
        if packets:
            return Packets(packets)
        decoder = self._decoder
        assert decoder is not None
        if self._eof or (self._tls is not None and self._tls.peer_closed):
            if decoder.has_partial():
                raise RemoteProtocolError(
                    "the peer closed the connection in the middle of a packet"
                )
            self._set_state(State.CLOSED)
            return ConnectionClosed()
        return NEED_DATA

    def _decode_buffered(self) -> list[list[Any]]:
        """Hand out what is decoded and decode what is buffered."""
        packets, self._packets = self._packets, []
        if self._tls is not None:
            self._rbuf += self._tls.read(authenticated=True)
        if self._rbuf:
            data = bytes(self._rbuf)
            self._rbuf.clear()
            assert self._decoder is not None
            packets += self._decoder.feed(data)
        return packets

    def receive_packets(self, data: bytes) -> list[list[Any]]:
        """Fast path once open: feed bytes from the peer, get its packets.

        b"" is the end of the stream; next_event() then says whether the
        peer closed cleanly (ConnectionClosed) or mid-packet (an error).
        """
        if self._state is not State.OPEN:
            raise LocalProtocolError(
                f"receive_packets() needs an open connection (state {self._state.value})"
            )
        try:
            tls = self._tls
            if tls is None and data and not self._rbuf and not self._packets:
                return self._decoder.feed(data)  # type: ignore[union-attr]
            self.receive_data(data)
            return self._decode_buffered()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def receive_iter(self, data: bytes) -> Iterable[list[Any]]:
        """receive_packets() that hands each packet out as soon as it is
        decoded: run the result to the end before the next call. An error
        is raised by the call or by the iteration (msgpack hands out the
        packets in front of it first), and fails the connection either way."""
        if self._state is not State.OPEN:
            raise LocalProtocolError(
                f"receive_iter() needs an open connection (state {self._state.value})"
            )
        if self._tls is None and data and not self._rbuf and not self._packets:
            return self._decoder.packets(data, self._data_error)  # type: ignore[union-attr]
        return self.receive_packets(data)

    def data_phase(
        self,
    ) -> tuple[Callable[[bytes], Iterable[list[Any]]], Callable[[bytes], bytes] | None]:
        """The shortest ways to receive and to send from now on, for a
        caller that uses nothing else of this connection but close(): a
        function that does what receive_iter() does, and wrap(), or None
        where wrap() would return the bytes unchanged (no TLS)."""
        decoder = self._decoder
        if self._state is not State.OPEN or decoder is None:
            raise LocalProtocolError(f"no data phase in state {self._state.value}")
        if self._tls is not None or self._rbuf or self._packets or self._wbuf:
            return self.receive_iter, self.wrap
        return decoder.packets, None

    def _data_error(self, exc: RemoteProtocolError) -> None:
        # the caller may have closed the connection while it iterated
        if self._state is State.OPEN:
            self._fail(exc)

    def encode(self, packet: Sequence[Any]) -> bytes:
        """One packet [portname, *message] as bytes in our send framing.

        Raises MessageError, naming the value, for what cannot be sent.
        Concatenate the results and pass them through wrap() to send.
        """
        return self._encoder.encode(packet)

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes:
        """encode([portname, *msg]) for a non-empty msg, without building the
        packet first when the message is flat."""
        return self._encoder.encode_message(portname, msg)

    @property
    def encoder(self) -> Encoder:
        """The encoder of our send framing, for a hot loop to bind
        ``encode = conn.encoder.encode`` and save a call per packet."""
        if isinstance(self._encoder, _NotOpen):
            raise LocalProtocolError("there is no encoder before the handshake is complete")
        return self._encoder

    def wrap(self, raw: bytes) -> bytes:
        """Bytes to write for encoded packets ``raw``: TLS records with TLS,
        else ``raw`` itself, after anything still queued."""
        if self._state is not State.OPEN:
            raise LocalProtocolError(f"cannot send packets in state {self._state.value}")
        tls = self._tls
        if tls is None:
            if self._wbuf:
                raw = bytes(self._wbuf) + raw
                self._wbuf.clear()
            return raw
        tls.write(raw)
        return self.data_to_send()

    def send_packets(self, packets: Iterable[Sequence[Any]]) -> None:
        """Queue packets for data_to_send(); all or nothing if one is bad."""
        if self._state is not State.OPEN:
            raise LocalProtocolError(f"cannot send packets in state {self._state.value}")
        encode = self._encoder.encode
        raw = b"".join([encode(packet) for packet in packets])
        if self._tls is None:
            self._wbuf += raw
        else:
            self._tls.write(raw)

    def data_to_send(self) -> bytes:
        """Everything to write to the peer now (may be b"")."""
        out = self._wbuf
        tls = self._tls
        if tls is not None and tls.has_output():
            out += tls.take_output()
        if not out:
            return b""
        self._wbuf = bytearray()
        return bytes(out)

    def close(self) -> None:
        """We are done: no more events. With TLS, a close_notify is queued."""
        if self._state is State.CLOSED or self._state is State.FAILED:
            return
        if self._tls is not None and self._tls.handshake_done:
            self._tls.close()
        self._set_state(State.CLOSED)
