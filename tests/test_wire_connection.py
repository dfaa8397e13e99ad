"""The connection state machine: handshakes between two in-memory Connections,
refusals, limits, bad input, and fuzzing of every state."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aemp._errors import (
    AuthError,
    ConfigError,
    LocalProtocolError,
    MessageError,
    RemoteProtocolError,
)
from aemp.tls import make_certificate
from aemp.wire import (
    AUTH_METHODS,
    MAX_LINE,
    NEED_DATA,
    Authenticated,
    Connection,
    ConnectionClosed,
    Event,
    GreetingReceived,
    Packets,
    Settings,
    State,
    auth_token,
    make_encoder,
)

SECRET = "s3cret"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- helpers -----------------------------------------------------------------


def make_settings(nodeid: str, **kw: Any) -> Settings:
    if "secret" not in kw and "tls" not in kw:
        kw["secret"] = SECRET
    tls = kw.pop("tls", None)
    if tls is not None:
        kw["tls_server"], kw["tls_client"] = tls
    return Settings(nodeid, "aemp-py-test", **kw)


@dataclass
class Cert:
    chain: Path  # key + certificate, for load_cert_chain
    pem: str  # the certificate, for load_verify_locations


def make_cert(directory: Path, name: str) -> Cert:
    """A self-signed certificate that is its own CA, as `aemp gencert` makes it."""
    bundle = make_certificate(name, days=1)
    chain = directory / f"{name}.pem"
    chain.write_text(bundle)
    return Cert(chain, bundle[bundle.index("-----BEGIN CERTIFICATE-----") :])


def tls_contexts(own: Cert, trusted: Cert) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for ctx in (server, client):
        ctx.load_cert_chain(own.chain)
        ctx.load_verify_locations(cadata=trusted.pem)
    return server, client


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cert, Cert]:
    directory = tmp_path_factory.mktemp("certs")
    return make_cert(directory, "one"), make_cert(directory, "two")


@pytest.fixture(scope="module")
def tls(certs: tuple[Cert, Cert]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_contexts(certs[0], certs[0])


@dataclass
class Side:
    conn: Connection
    events: list[Event] = field(default_factory=list)
    error: RemoteProtocolError | None = None
    wire: bytearray = field(default_factory=bytearray)  # everything it sent

    @property
    def auth(self) -> Authenticated:
        found = [e for e in self.events if isinstance(e, Authenticated)]
        assert len(found) == 1, self.events
        return found[0]

    def drain(self) -> None:
        while self.error is None:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                self.error = exc
                return
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                return
            self.events.append(event)


def run(a: Connection, b: Connection, *, start: bool = True) -> tuple[Side, Side]:
    """Shuttle bytes between a and b until nothing moves any more."""
    sa, sb = Side(a), Side(b)
    if start:
        a.start()
        b.start()
    for _ in range(50):
        moved = False
        for src, dst in ((sa, sb), (sb, sa)):
            # a side that failed still flushes what it queued before (Perl's
            # peers, too, get our auth line or a TLS alert before the close)
            data = src.conn.data_to_send()
            if data:
                src.wire += data
                dst.conn.receive_data(data)
                moved = True
        sa.drain()
        sb.drain()
        if not moved:
            break
    return sa, sb


def pair(sa: Settings, sb: Settings) -> tuple[Side, Side]:
    return run(Connection(sa, peeraddr="10.0.0.2:4040"), Connection(sb, peeraddr="10.0.0.1:5555"))


def open_pair(sa: Settings, sb: Settings) -> tuple[Side, Side]:
    a, b = pair(sa, sb)
    assert a.error is None and b.error is None, (a.error, b.error)
    assert a.conn.state is State.OPEN and b.conn.state is State.OPEN
    return a, b


def exchange(a: Side, b: Side) -> None:
    """Packets both ways, through both the fast path and the event path."""
    batch = [["port", "ping", i, "x" * 32] for i in range(100)]
    encode = a.conn.encoder.encode
    raw = b"".join(a.conn.encode(p) for p in batch[:50]) + b"".join(map(encode, batch[50:]))
    assert b.conn.receive_packets(a.conn.wrap(raw)) == batch
    b.conn.send_packets([["", "reply", {"k": [1, None, True]}], []])
    a.conn.receive_data(b.conn.data_to_send())
    assert a.conn.next_event() == Packets([["", "reply", {"k": [1, None, True]}], []])
    assert a.conn.next_event() is NEED_DATA


def greeting_of(side: Side) -> tuple[bytes, bytes]:
    line1, line2, _ = bytes(side.wire).split(b"\n", 2)
    return line1, line2


# -- successful handshakes ----------------------------------------------------------


def test_hmac_with_msgpack() -> None:
    a, b = open_pair(make_settings("A"), make_settings("B"))
    assert isinstance(a.events[0], GreetingReceived) and a.events[0].greeting.nodeid == "B"
    assert a.auth == Authenticated(
        remote_nodeid="B",
        greeting=a.events[0].greeting,
        method="hmac_sha3_512",
        send_framing="msgpack",
        recv_framing="msgpack",
        tls=False,
        remote_heartbeat=None,
    )
    assert b.auth.remote_nodeid == "A" and b.auth.method == "hmac_sha3_512"
    g = b.auth.greeting
    assert g.provider == "aemp-py-test" and g.peeraddr == "10.0.0.2:4040" and not g.tls
    assert g.options["mproto"] == g.options["gproto"] == "1"
    assert a.conn.tls_version is None and a.conn.handshake_done
    exchange(a, b)
    exchange(b, a)


def test_greeting_lines_are_exactly_as_specified() -> None:
    conn = Connection(make_settings("node/x", heartbeat=15), peeraddr="127.0.0.1:4040")
    conn.start()
    line1, line2, rest = conn.data_to_send().split(b"\n")
    assert rest == b""
    assert line1 == (
        b"aemp;1;node/x;tls_sha3_512,hmac_sha3_512;msgpack,json;provider=aemp-py-test;"
        b"peeraddr=127.0.0.1:4040;mproto=1;gproto=1;hb=15;tiebreak=nonce"
    )
    other = Connection(make_settings("A", heartbeat=15), peeraddr="127.0.0.1:4040")
    other.start()
    assert len(line2) == 88 and other.data_to_send().split(b"\n")[1] != line2
    assert len(base64.b64decode(line2, validate=True)) == 66
    with pytest.raises(LocalProtocolError):
        conn.start()


def test_hmac_with_json() -> None:
    a, b = open_pair(make_settings("A", framing_format=["json"]), make_settings("B"))
    assert a.auth.send_framing == a.auth.recv_framing == "json"
    assert b.auth.send_framing == b.auth.recv_framing == "json"
    exchange(a, b)
    exchange(b, a)


def test_framing_is_chosen_per_direction() -> None:
    a, b = open_pair(
        make_settings("A", framing_format=("msgpack", "json")),
        make_settings("B", framing_format=("json", "msgpack")),
    )
    # each side sends the first of the *peer's* list that it speaks
    assert (a.auth.send_framing, a.auth.recv_framing) == ("json", "msgpack")
    assert (b.auth.send_framing, b.auth.recv_framing) == ("msgpack", "json")
    exchange(a, b)
    exchange(b, a)


def test_cleartext_when_configured() -> None:
    a, b = open_pair(
        make_settings("A", auth_offer=["cleartext"]),
        make_settings("B", auth_accept=["hmac_sha3_512", "cleartext"]),
    )
    assert b.auth.method == "cleartext" and a.auth.method == "hmac_sha3_512"
    assert b"\ncleartext;" + SECRET.encode().hex().encode() + b";msgpack\n" in a.wire
    exchange(a, b)


def test_heartbeat_is_announced_and_reported() -> None:
    a, b = open_pair(make_settings("A", heartbeat=2.5), make_settings("B", heartbeat=10))
    assert a.auth.remote_heartbeat == 10.0 and b.auth.remote_heartbeat == 2.5


def test_tls_sha3_512(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, b = open_pair(make_settings("A", tls=tls), make_settings("B", tls=tls))
    assert a.auth.tls and b.auth.tls
    assert a.auth.method == b.auth.method == "tls_sha3_512"
    assert a.conn.tls_version == "TLSv1.3"
    for side in (a, b):
        # the greeting is in clear text and offers TLS; the auth line is not
        assert b";tls=1.0" in greeting_of(side)[0]
        assert b"tls_sha3_512;" not in side.wire.split(b"\n", 2)[2]
    exchange(a, b)
    exchange(b, a)


@pytest.mark.parametrize("with_tls", [False, True])
def test_data_phase_shortcuts(tls: tuple[ssl.SSLContext, ssl.SSLContext], with_tls: bool) -> None:
    kw: dict[str, Any] = {"tls": tls} if with_tls else {}
    a, b = open_pair(make_settings("A", **kw), make_settings("B", **kw))
    receive, _ = b.conn.data_phase()
    _, wrap = a.conn.data_phase()
    assert (wrap is None) is not with_tls  # without TLS nothing is wrapped
    batch = [["port", "ping", i, "x" * 32] for i in range(100)]
    raw = b"".join(a.conn.encode_message(p[0], p[1:]) for p in batch)
    data = raw if wrap is None else wrap(raw)
    got: list[list[Any]] = []
    for i in range(0, len(data), 97):
        got += receive(data[i : i + 97])
    assert got == batch
    # an error still fails the connection
    bad = b"\xc1" if wrap is None else wrap(b"\xc1")
    with pytest.raises(RemoteProtocolError):
        list(receive(bad))
    assert b.conn.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        b.conn.data_phase()


def test_tls_without_any_secret(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, _ = open_pair(make_settings("A", tls=tls), make_settings("B", tls=tls))
    assert a.conn.settings.secret_bytes is None
    assert a.auth.method == "tls_sha3_512"


def test_tls_anon_when_configured(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    kw: dict[str, Any] = {"tls": tls, "auth_offer": ["tls_anon"], "auth_accept": ["tls_anon"]}
    a, b = open_pair(make_settings("A", **kw), make_settings("B", **kw))
    assert a.auth.method == b.auth.method == "tls_anon" and a.auth.tls
    exchange(b, a)


def test_tls_only_when_both_sides_have_it(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, b = open_pair(make_settings("A", tls=tls, secret=SECRET), make_settings("B"))
    assert not a.auth.tls and a.auth.method == b.auth.method == "hmac_sha3_512"
    exchange(a, b)


def test_tls_roles_follow_the_nonces(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, b = open_pair(make_settings("A", tls=tls), make_settings("B", tls=tls))
    a_is_client = greeting_of(a)[1] < greeting_of(b)[1]
    assert a.conn._tls is not None and b.conn._tls is not None
    assert a.conn._tls.server_side is not a_is_client
    assert b.conn._tls.server_side is a_is_client


def test_packets_right_behind_the_auth_line_are_not_lost() -> None:
    # a peer (Perl does this) that sends its auth line and packets in one segment
    a2 = Connection(make_settings("A"), peeraddr="x:1")
    a2.start()
    peer_l1, peer_l2 = b"aemp;1;perl;hmac_sha3_512;json;provider=AE-2.01", b"N" * 88
    a2.receive_data(peer_l1 + b"\n" + peer_l2 + b"\n")
    assert isinstance(a2.next_event(), GreetingReceived)
    assert a2.next_event() is NEED_DATA
    own_l1, own_l2, _ = a2.data_to_send().split(b"\n", 2)
    token = auth_token("hmac_sha3_512", SECRET.encode(), (peer_l1, peer_l2), (own_l1, own_l2))
    a2.receive_data(b"hmac_sha3_512;" + token + b';json\n["","g_slave"]["x",1]["y"')
    assert isinstance(a2.next_event(), Authenticated)
    assert a2.receive_packets(b",2]") == [["", "g_slave"], ["x", 1], ["y", 2]]


# -- refused handshakes ---------------------------------------------------------------


def test_wrong_secret_fails_on_both_sides() -> None:
    a, b = pair(make_settings("A", secret="one"), make_settings("B", secret="two"))
    for side in (a, b):
        assert isinstance(side.error, AuthError)
        assert "shared secret mismatch" in str(side.error)
        assert side.conn.state is State.FAILED
        assert not any(isinstance(e, Authenticated) for e in side.events)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        a.conn.next_event()


def test_no_common_framing_fails_on_both_sides() -> None:
    a, b = pair(
        make_settings("A", framing_format=["msgpack"]), make_settings("B", framing_format=["json"])
    )
    for side in (a, b):
        assert isinstance(side.error, RemoteProtocolError)
        assert "no common framing" in str(side.error)
        # refused before any auth line went out
        assert side.wire.count(b"\n") == 2


def test_no_common_auth_method() -> None:
    a, b = pair(make_settings("A", auth_offer=["cleartext"]), make_settings("B"))
    assert isinstance(a.error, AuthError) and "no common auth method" in str(a.error)
    assert b.error is None and b.conn.state is State.AUTH  # waits: its timeout is the caller's
    b.conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection during the handshake"):
        b.conn.next_event()


def test_no_tls_on_the_peer_and_no_secret_here(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, _ = pair(make_settings("A", tls=tls), make_settings("B"))
    assert isinstance(a.error, AuthError)
    assert "no shared secret is configured" in str(a.error) and "aemp gensecret" in str(a.error)


def test_tls_certificate_that_does_not_verify(certs: tuple[Cert, Cert]) -> None:
    one, two = certs
    a, b = pair(
        make_settings("A", tls=tls_contexts(one, one)),
        make_settings("B", tls=tls_contexts(two, two)),
    )
    for side in (a, b):
        assert isinstance(side.error, AuthError), side.error
        assert isinstance(side.error.__cause__, ssl.SSLError)
        assert "TLS" in str(side.error)
    assert any("certificate verify failed" in str(s.error) for s in (a, b))


class RawPeer:
    """A hand-driven peer: sends what the test says, computes honest tokens."""

    def __init__(self, conn: Connection, line1: bytes, line2: bytes = b"N" * 88) -> None:
        self.conn, self.line1, self.line2 = conn, line1, line2
        conn.start()
        conn.receive_data(line1 + b"\n" + line2 + b"\n")
        event = conn.next_event()
        assert isinstance(event, GreetingReceived)
        self.event = conn.next_event()  # NEED_DATA, or an error raised
        self.own_l1, self.own_l2, self.after = conn.data_to_send().split(b"\n", 2)

    def token(self, method: str, secret: bytes | None = SECRET.encode()) -> bytes:
        return auth_token(method, secret, (self.line1, self.line2), (self.own_l1, self.own_l2))

    def send(self, line: bytes) -> Event | Any:
        self.conn.receive_data(line + b"\n")
        return self.conn.next_event()


PERL_LINE1 = b"aemp;1;perl;tls_sha3_512,hmac_sha3_512,tls_anon,cleartext;json;provider=AE-2.01"


def test_a_method_not_in_auth_accept_is_refused() -> None:
    peer = RawPeer(Connection(make_settings("A"), peeraddr="p:1"), PERL_LINE1)
    # a correct cleartext token, but we accept only tls_sha3_512 and hmac_sha3_512
    with pytest.raises(AuthError, match="not in our auth_accept"):
        peer.send(b"cleartext;" + peer.token("cleartext") + b";json")


def test_a_correct_hmac_from_a_raw_peer_is_accepted() -> None:
    peer = RawPeer(Connection(make_settings("A"), peeraddr="p:1"), PERL_LINE1)
    event = peer.send(b"hmac_sha3_512;" + peer.token("hmac_sha3_512") + b";json")
    assert isinstance(event, Authenticated) and event.recv_framing == "json"


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        (b"tls_anon;;json", AuthError, "not in our auth_accept"),
        (b"foo;x;json", AuthError, "unknown auth method"),
        (b"hmac_sha3_512;" + b"0" * 128 + b";json", AuthError, "shared secret mismatch"),
        (b"hmac_sha3_512;\xff;json", AuthError, "shared secret mismatch"),
        (b"hmac_sha3_512;json", RemoteProtocolError, "expected 3"),
        (b"hmac_sha3_512;x;json;extra", RemoteProtocolError, "expected 3"),
        (b"\xff;x;json", RemoteProtocolError, "not ASCII"),
        (b"x" * (MAX_LINE + 1), RemoteProtocolError, "longer than 4096"),
    ],
)
def test_bad_auth_lines(line: bytes, error: type[Exception], match: str) -> None:
    peer = RawPeer(Connection(make_settings("A"), peeraddr="p:1"), PERL_LINE1)
    with pytest.raises(error, match=match):
        peer.send(line)


def test_tls_methods_need_tls(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    conn = Connection(
        make_settings("A", tls=tls, secret=SECRET, auth_accept=["tls_anon", "hmac_sha3_512"]),
        peeraddr="p:1",
    )
    peer = RawPeer(conn, PERL_LINE1)  # no tls=1.0 in the peer's greeting
    with pytest.raises(AuthError, match="TLS is not in use"):
        peer.send(b"tls_anon;;json")


def test_the_peer_must_send_a_framing_we_offered() -> None:
    peer = RawPeer(
        Connection(make_settings("A", framing_format=["json"]), peeraddr="p:1"), PERL_LINE1
    )
    with pytest.raises(RemoteProtocolError, match="framing 'msgpack', which we did not offer"):
        peer.send(b"hmac_sha3_512;" + peer.token("hmac_sha3_512") + b";msgpack")


def _greeting_error(data: bytes, *, eof: bool = False) -> RemoteProtocolError:
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        while conn.next_event() is not NEED_DATA:
            pass
    assert conn.state is State.FAILED
    return info.value


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"aemp;2;perl;hmac_sha3_512;json\nnonce\n", "version mismatch"),
        (b"aemp;1.0;perl;hmac_sha3_512;json\nnonce\n", "version mismatch"),
        (b"aemp-other;1;perl;hmac_sha3_512;json\nnonce\n", "sub-protocol 'aemp-other'"),
        (b"aemp-dataconn;1;perl;hmac_sha3_512;json\nnonce\n", "dataconn_id=None"),
        (b"aemp-dataconn;1;perl;hmac_sha3_512;json;dataconn_id=\nnonce\n", "dataconn_id=''"),
        (b"GET / HTTP/1.1\r\n", "not an aemp greeting"),
        (b"\x16\x03\x01\x02\x00", "not an aemp greeting"),  # a TLS ClientHello
        (b"\naemp;1;perl;hmac_sha3_512;json\n", "not an aemp greeting"),
        (b"aemp;1;perl\nnonce\n", "expected at least 5"),
        (b"aemp;1;;hmac_sha3_512;json\nnonce\n", "empty node ID"),
        (b"aemp;1;p\xff;hmac_sha3_512;json\nnonce\n", "not valid UTF-8"),
        (b"aemp;1;perl;hmac_sha3_512;json\n\xff\n", "not valid UTF-8"),
        (b"aemp;1;" + b"x" * 1_000_000, "longer than 4096"),
        (b"aemp;1;perl;hmac_sha3_512;json\n" + b"n" * 5000, "line 2 is longer than 4096"),
    ],
)
def test_bad_greetings(data: bytes, match: str) -> None:
    assert match in str(_greeting_error(data))


def test_echo_of_our_own_greeting_is_refused() -> None:
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    conn.receive_data(conn.data_to_send())
    with pytest.raises(AuthError, match="echo attack"):
        conn.next_event()


def test_a_long_greeting_line_is_refused_without_buffering_more() -> None:
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    fed = 0
    with pytest.raises(RemoteProtocolError, match="longer than 4096"):
        for _ in range(1000):
            conn.receive_data(b"aemp;1;" if fed == 0 else b"x" * 1000)
            fed += 7 if fed == 0 else 1000
            assert conn.next_event() is NEED_DATA
    assert fed <= MAX_LINE + 1000 + 7


def test_a_greeting_line_of_exactly_4096_bytes_is_fine() -> None:
    line1 = b"aemp;1;perl;hmac_sha3_512;json;pad="
    line1 += b"p" * (MAX_LINE - len(line1))
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    conn.receive_data(line1 + b"\r\n" + b"n" * MAX_LINE + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, GreetingReceived) and event.greeting.options["pad"] == "p" * 4061
    assert _greeting_error(b"x" + line1 + b"\n") is not None


def test_greeting_options_parse_like_perl() -> None:
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    conn.receive_data(b"aemp;1;p;hmac_sha3_512;json;bare;k=v=w;;=x;tls=1.0;hb=2.5\nn\n")
    event = conn.next_event()
    assert isinstance(event, GreetingReceived)
    g = event.greeting
    assert g.options == {"bare": None, "k": "v=w", "tls": "1.0", "hb": "2.5"}
    assert g.tls and g.heartbeat == 2.5 and g.framings == ("json",) and not g.tiebreak


def test_eof_during_the_greeting() -> None:
    error = _greeting_error(b"aemp;1;p;cleartext;json\n", eof=True)
    assert "closed the connection during the handshake (waiting for greeting line 2)" in str(error)
    conn = Connection(make_settings("A"), peeraddr="p:1")
    conn.start()
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection during the handshake"):
        conn.next_event()


# -- the data phase: limits and bad packets -----------------------------------------


def _open(framing: str, max_packet: int = 1000) -> tuple[Side, Side]:
    return open_pair(
        make_settings("A", framing_format=[framing], max_packet=max_packet),
        make_settings("B", framing_format=[framing], max_packet=max_packet),
    )


BAD_PACKETS = {
    "msgpack": {
        "too large": make_encoder("msgpack").encode(["p", "x" * 2000]),
        "not an array": b"\x81\xa1a\x01",
        "port name": b"\x92\x01\xa1x",
        "invalid msgpack": b"\xc1",
        "utf": b"\x91\xa2\xff\xfe",
    },
    "json": {
        "too large": make_encoder("json").encode(["p", "x" * 2000]),
        "not a json array": b'{"a":1}',
        "port name": b'[1,"x"]',
        "invalid json": b'["a",]',
        "utf-8": b'["\xff"]',
    },
}


@pytest.mark.parametrize("path", ["fast", "iter", "events"])
@pytest.mark.parametrize(
    ("framing", "reason"), [(f, r) for f, bad in BAD_PACKETS.items() for r in bad]
)
def test_bad_packets_fail_the_connection(framing: str, reason: str, path: str) -> None:
    a, b = _open(framing)
    good = a.conn.wrap(a.conn.encode(["p", 1]))
    bad = BAD_PACKETS[framing][reason]
    seen: list[list[Any]] = []
    with pytest.raises(RemoteProtocolError) as info:
        if path == "fast":
            b.conn.receive_packets(good + bad)
        elif path == "iter":
            for packet in b.conn.receive_iter(good + bad):
                seen.append(packet)
                assert b.conn.state is State.OPEN
        else:
            b.conn.receive_data(good + bad)
            while b.conn.next_event() is not NEED_DATA:
                pass
    assert reason in str(info.value).lower().replace("max_packet", "too large")
    assert b.conn.state is State.FAILED
    # the iterator hands out what came before the bad packet (msgpack decodes
    # one packet at a time; json finds the error before handing out any)
    assert seen == ([["p", 1]] if framing == "msgpack" and path == "iter" else [])
    with pytest.raises(LocalProtocolError):
        b.conn.receive_packets(good)
    with pytest.raises(LocalProtocolError):
        b.conn.receive_iter(good)


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_receive_iter_hands_out_packets_in_order(framing: str) -> None:
    a, b = _open(framing, max_packet=4096)
    batch = [["port", "ping", i, "x" * 32] for i in range(200)]
    raw = a.conn.wrap(b"".join(map(a.conn.encode, batch)))
    got: list[list[Any]] = []
    for i in range(0, len(raw), 333):  # split inside packets
        got += b.conn.receive_iter(raw[i : i + 333])
    assert got == batch
    assert b.conn.state is State.OPEN
    assert list(b.conn.receive_iter(b"")) == []  # the end of the stream
    assert b.conn.next_event() == ConnectionClosed()


def test_sending_is_checked_before_anything_is_queued() -> None:
    a, b = _open("json")
    with pytest.raises(MessageError, match="binary data"):
        a.conn.send_packets([["p", 1], ["p", b"bytes"]])
    with pytest.raises(MessageError, match="exceeds max_packet"):
        a.conn.encode(["p", "x" * 2000])
    assert a.conn.data_to_send() == b""
    a.conn.send_packets([["p", 2]])
    assert b.conn.receive_packets(a.conn.data_to_send()) == [["p", 2]]


def test_clean_eof_and_eof_inside_a_packet() -> None:
    a, b = _open("msgpack")
    data = a.conn.wrap(a.conn.encode(["p", "hello"]))
    assert b.conn.receive_packets(data) == [["p", "hello"]]
    assert b.conn.receive_packets(b"") == []
    assert isinstance(b.conn.next_event(), ConnectionClosed)
    assert b.conn.state is State.CLOSED
    assert isinstance(b.conn.next_event(), ConnectionClosed)

    for cut in (data[:-1], data + b"\x93\xa1p\x01"):  # the second: a whole packet, then
        a, b = _open("msgpack")  # the header and whole elements of the next
        b.conn.receive_packets(cut)
        b.conn.receive_packets(b"")
        with pytest.raises(RemoteProtocolError, match="middle of a packet"):
            b.conn.next_event()


def test_tls_close_notify_and_eof(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    a, b = open_pair(make_settings("A", tls=tls), make_settings("B", tls=tls))
    a.conn.send_packets([["p", 1]])
    a.conn.close()
    assert a.conn.state is State.CLOSED
    assert b.conn.receive_packets(a.conn.data_to_send()) == [["p", 1]]
    assert isinstance(b.conn.next_event(), ConnectionClosed)


def test_bad_connection_arguments() -> None:
    with pytest.raises(ConfigError, match="peeraddr"):
        Connection(make_settings("A"), peeraddr="a;b")
    with pytest.raises(ConfigError, match="Settings"):
        Connection({"nodeid": "A"}, peeraddr="a:1")  # type: ignore[arg-type]


def test_wrong_use_is_a_local_protocol_error() -> None:
    conn = Connection(make_settings("A"), peeraddr="p:1")
    with pytest.raises(LocalProtocolError, match="start"):
        conn.next_event()
    conn.start()
    for call in (
        lambda: conn.encode(["p"]),
        lambda: conn.encoder,
        lambda: conn.wrap(b""),
        lambda: conn.send_packets([["p"]]),
        lambda: conn.receive_packets(b"x"),
    ):
        with pytest.raises(LocalProtocolError):
            call()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after the end"):
        conn.receive_data(b"x")


# -- settings ------------------------------------------------------------------------


def test_no_secret_and_no_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"aemp gensecret.*aemp gencert"):
        Settings("A", "aemp-py-test")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"auth_offer": ["hmac_sha3_512", "md5"]}, "'md5' is not supported"),
        ({"auth_accept": []}, "must not be empty"),
        ({"auth_offer": ["tls_sha3_512"]}, "no method this node can use"),
        ({"framing_format": ["cbor", "json"]}, "'cbor' is not supported"),
        ({"framing_format": "json,msgpack", "max_packet": 0}, "'max_packet' must be a positive"),
        ({"max_packet": "5"}, "got '5', a str"),
        ({"heartbeat": 0}, "'heartbeat'"),
        ({"heartbeat": float("nan")}, "'heartbeat'"),
        ({"secret": ""}, "'secret' must be a non-empty"),
        ({"secret": 5}, "'secret'"),
        ({"nodeid": "a;b"}, "must not contain ';'"),
        ({"nodeid": "a#b"}, "must not contain '#'"),
        ({"nodeid": ""}, "'nodeid' must be a non-empty str"),
        ({"provider": "x\n"}, "must not contain"),
    ],
)
def test_bad_settings(kw: dict[str, Any], match: str) -> None:
    args = {"nodeid": "A", "provider": "p", "secret": SECRET, **kw}
    with pytest.raises(ConfigError, match=match):
        Settings(**args)


def test_list_settings_are_normalised() -> None:
    s = Settings(
        "A", "p", secret=b"hush", auth_offer="hmac_sha3_512,cleartext", framing_format=["json"]
    )
    assert s.auth_offer == ("hmac_sha3_512", "cleartext") and s.framing_format == ("json",)
    assert s.secret_bytes == b"hush" and "hush" not in repr(s)


def test_tls_settings_must_verify_the_peer(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls
    with pytest.raises(ConfigError, match="when the other one is set"):
        Settings("A", "p", tls_server=server)
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ConfigError, match="CERT_REQUIRED"):
        Settings("A", "p", tls_server=lax, tls_client=client)
    strict = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ConfigError, match="check_hostname"):
        Settings("A", "p", tls_server=server, tls_client=strict)


# -- fuzzing: any input is handled or refused with RemoteProtocolError ---------------


def _drain_or_refuse(conn: Connection, chunks: list[bytes], feed: Callable[[bytes], Any]) -> None:
    for chunk in chunks:
        try:
            feed(chunk)
            while conn.state is not State.OPEN and conn.next_event() is not NEED_DATA:
                pass
        except RemoteProtocolError:
            assert conn.state is State.FAILED
            return


# pieces of real handshakes, so that fuzzing gets past the first bytes
_TOKENS = [b"aemp;1;", b"aemp", b";", b",", b"=", b"\n", b"\r\n", b"perl", b"1", b"json"]
_TOKENS += [b"msgpack", b"hmac_sha3_512", b"cleartext", b"tls_anon", b"tls=1.0", b"hb=5"]
_TOKENS += [b"aemp;1;perl;hmac_sha3_512,cleartext;json;tls=1\n" + b"N" * 88 + b"\n"]
PROTOCOLISH = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=12), max_size=30).map(b"".join)


@FUZZ
@given(chunks=st.lists(st.binary(max_size=200) | PROTOCOLISH, max_size=6))
def test_fuzz_handshake(chunks: list[bytes], tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    conn = Connection(
        make_settings("A", tls=tls, secret=SECRET, auth_accept=list(AUTH_METHODS)),
        peeraddr="p:1",
    )
    conn.start()
    _drain_or_refuse(conn, chunks, conn.receive_data)


@FUZZ
@given(
    chunks=st.lists(st.binary(max_size=200), max_size=6),
    line1=st.sampled_from([PERL_LINE1, PERL_LINE1 + b";tls=1"]),
)
def test_fuzz_after_a_valid_greeting(
    chunks: list[bytes], line1: bytes, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    conn = Connection(make_settings("A", tls=tls, secret=SECRET), peeraddr="p:1")
    conn.start()
    conn.receive_data(line1 + b"\n" + b"N" * 88 + b"\n")
    _drain_or_refuse(conn, chunks, conn.receive_data)


@FUZZ
@given(
    chunks=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    framing=st.sampled_from(["msgpack", "json"]),
    fast=st.booleans(),
)
def test_fuzz_open_connection(chunks: list[bytes], framing: str, fast: bool) -> None:
    _, b = _open(framing)
    conn = b.conn
    for chunk in [*chunks, b""]:
        try:
            if fast:
                packets = conn.receive_packets(chunk)
            else:
                conn.receive_data(chunk)
                packets = []
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectionClosed):
                        break
                    assert isinstance(event, Packets)
                    packets += event.packets
        except RemoteProtocolError:
            assert conn.state is State.FAILED
            return
        assert all(type(p) is list and (not p or type(p[0]) is str) for p in packets)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4))
def test_fuzz_open_tls_connection(
    chunks: list[bytes], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    _, b = open_pair(make_settings("A", tls=tls), make_settings("B", tls=tls))
    with pytest.raises(RemoteProtocolError, match="TLS"):
        for chunk in chunks:
            b.conn.receive_packets(chunk)
        # random bytes are never a valid TLS record with our keys; if they were
        # only the start of one, this completes it (records are < 17 KB)
        b.conn.receive_packets(b"\x00" * 20_000)
