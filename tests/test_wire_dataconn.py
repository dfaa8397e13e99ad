"""The data connection's handshake (protocol aemp-dataconn) in memory: the
dialler's greeting, authentication as for a link, then raw bytes, with and
without TLS; a wrong secret; what a Perl node's dataconn greeting looks like."""

from __future__ import annotations

import ssl

import pytest
from test_wire_connection import Side, certs, make_settings, run, tls  # noqa: F401 - fixtures

from aemp import AuthError, ConfigError
from aemp.wire import DATACONN, Connection, State


def dataconn_pair(sa_kw: dict, sb_kw: dict) -> tuple[Side, Side]:  # type: ignore[type-arg]
    dialler = Connection(make_settings("A", **sa_kw), peeraddr="10.0.0.2:4040", dataconn_id="7@A")
    acceptor = Connection(make_settings("B", **sb_kw), peeraddr="10.0.0.1:5555")
    return run(dialler, acceptor)


def test_the_dialler_greets_with_the_sub_protocol_and_its_id() -> None:
    conn = Connection(make_settings("A"), peeraddr="h:1", dataconn_id="a@A")
    conn.start()
    line1 = conn.data_to_send().split(b"\n")[0]
    assert line1.startswith(b"aemp-dataconn;1;A;")
    assert line1.endswith(b";dataconn_id=a@A")


def test_raw_bytes_after_the_handshake() -> None:
    a, b = dataconn_pair({}, {})
    assert a.error is None and b.error is None, (a.error, b.error)
    assert a.auth.dataconn_id == b.auth.dataconn_id == "7@A"
    assert b.auth.greeting.protocol == DATACONN and b.auth.remote_nodeid == "A"
    assert a.auth.greeting.protocol == "aemp"  # the listener greets as for a link
    pa, pb = a.conn.stream_phase(), b.conn.stream_phase()
    assert pa.first == pb.first == b"" and pa.wrap is None and pa.unwrap is None
    with pytest.raises(Exception, match="no stream phase"):
        Connection(make_settings("C"), peeraddr="h:1").stream_phase()


def test_bytes_that_came_behind_the_auth_line_are_the_stream(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],  # noqa: F811
) -> None:
    for kw in ({}, {"tls": tls}):
        dialler = Connection(make_settings("A", **kw), peeraddr="x:1", dataconn_id="9@A")
        acceptor = Connection(make_settings("B", **kw), peeraddr="y:2")
        a, b = run(dialler, acceptor)
        assert a.error is None and b.error is None, (kw, a.error, b.error)
        pa, pb = a.conn.stream_phase(), b.conn.stream_phase()
        assert a.auth.tls == bool(kw)
        payload = bytes(range(256)) * 1000
        raw = pa.wrap(payload) if pa.wrap else payload
        if kw:
            assert raw != payload and pb.unwrap is not None and pb.peer_closed is not None
            assert pb.unwrap(raw) == payload
            assert not pb.peer_closed()
        else:
            assert raw == payload


def test_a_wrong_secret_never_reaches_the_stream_phase() -> None:
    a, b = dataconn_pair({}, {"secret": "other"})
    assert isinstance(b.error, AuthError) or isinstance(a.error, AuthError)
    assert b.conn.state is not State.OPEN


def test_two_diallers_are_refused() -> None:
    one = Connection(make_settings("A"), peeraddr="x:1", dataconn_id="1@A")
    two = Connection(make_settings("B"), peeraddr="y:2", dataconn_id="1@B")
    a, _b = run(one, two)
    assert a.error is not None and "one of them must be a listener" in str(a.error)


def test_a_perl_style_dataconn_greeting_is_understood() -> None:
    """AnyEvent::MP's dialler: protocol aemp-dataconn, its usual keys and dataconn_id."""
    b = Connection(make_settings("B"), peeraddr="y:2")
    b.start()
    b.receive_data(
        b"aemp-dataconn;1;perlnode;hmac_sha3_512,cleartext;json;provider=AE-2.01;"
        b"peeraddr=y:2;dataconn_id=b@perlnode;mproto=1;gproto=1\n" + b"n" * 88 + b"\n"
    )
    event = b.next_event()
    greeting = event.greeting  # type: ignore[union-attr]
    assert greeting.protocol == DATACONN and greeting.dataconn_id == "b@perlnode"
    assert b.is_dataconn


@pytest.mark.parametrize("bad", ["", "x" * 201, "a;b", "tab\there"])
def test_a_bad_dataconn_id_is_refused_locally(bad: str) -> None:
    with pytest.raises(ConfigError, match="dataconn_id"):
        Connection(make_settings("A"), peeraddr="x:1", dataconn_id=bad)
