"""docs/protocol.md: its worked handshakes are right.

The examples are read out of the markdown (the blocks after the
``<!-- handshake-example: NAME secret=... -->`` and
``<!-- handshake-packets: NAME -->`` markers). Their tokens are recomputed
here with hashlib and hmac alone, so the page is checked against the
protocol as it describes it and not against aemp's code; separate tests
then check that aemp.wire agrees with the page, that the Perl example is
the captured connection byte for byte, and that two aemp nodes given the
page's nonces write exactly the page's greeting lines and packets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

import aemp.wire._connection as wire_connection
from aemp import AuthError, wire
from aemp._config import Config
from aemp.tls import make_certificate, ssl_contexts

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocol-vectors"  # ../shared
CAPTURE = {"perl-hmac-json": VECTORS / "json" / "seedproxy.conn1"}
SIDES = ("C", "A")  # connector, acceptor
OTHER = {"C": "A", "A": "C"}


@dataclass
class Handshake:
    name: str
    secret: bytes
    lines: dict[str, list[bytes]]  # side -> [line 1, line 2, auth line]


@dataclass
class Packet:
    side: str
    text: str  # as shown: raw JSON bytes, or the packet in JSON notation
    raw: bytes | None  # the msgpack bytes shown under it, if any


def _blocks(marker: str) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Fenced blocks right after ``<!-- marker: NAME key=value... -->``."""
    text = DOC.read_text()
    pattern = re.compile(
        rf"^<!-- {marker}: (\S+)((?: \w+=\S+)*) -->\n```text\n(.*?)^```$", re.M | re.S
    )
    found = {}
    for m in pattern.finditer(text):
        attrs = dict(kv.split("=", 1) for kv in m.group(2).split())
        found[m.group(1)] = (attrs, m.group(3).splitlines())
    return found


def handshakes() -> dict[str, Handshake]:
    out = {}
    for name, (attrs, lines) in _blocks("handshake-example").items():
        sides: dict[str, list[bytes]] = {"C": [], "A": []}
        for line in lines:
            side, sep, rest = line.partition("> ")
            assert sep and side in sides, f"{name}: not a 'C> ' or 'A> ' line: {line!r}"
            sides[side].append(rest.encode())
        out[name] = Handshake(name, attrs["secret"].encode(), sides)
    return out


def packets(name: str) -> list[Packet]:
    out: list[Packet] = []
    for line in _blocks("handshake-packets")[name][1]:
        if line.startswith(("C> ", "A> ")):
            out.append(Packet(line[0], line[3:], None))
        else:
            assert line.startswith("   ") and out, f"{name}: stray line {line!r}"
            out[-1].raw = (out[-1].raw or b"") + bytes.fromhex(line)
    return out


HANDSHAKES = handshakes()
NAMES = sorted(HANDSHAKES)


# -- the protocol, written out from the page ----------------------------------


def hmac_sha3_512_by_hand(key: bytes, msg: bytes) -> str:
    """RFC 2104 with SHA3-512's block size of 72 bytes, as the page says."""
    block = 72
    if len(key) > block:
        key = hashlib.sha3_512(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha3_512(bytes(k ^ 0x36 for k in key) + msg).digest()
    return hashlib.sha3_512(bytes(k ^ 0x5C for k in key) + inner).hexdigest()


def transcript(own: list[bytes], peer: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in (own[0], own[1], peer[0], peer[1]))


def expected_token(method: str, secret: bytes, own: list[bytes], peer: list[bytes]) -> bytes:
    msg = transcript(own, peer)
    if method == "hmac_sha3_512":
        token = hmac.new(secret, msg, hashlib.sha3_512).hexdigest()
        assert token == hmac_sha3_512_by_hand(secret, msg)
        return token.encode()
    if method == "tls_sha3_512":
        return hashlib.sha3_512(msg).hexdigest().encode()
    if method == "tls_anon":
        return b""
    if method == "cleartext":
        return secret.hex().encode()
    raise AssertionError(f"unknown auth method {method!r}")


def fields(line1: bytes) -> tuple[list[str], list[str], dict[str, str | None]]:
    """Auth accept list, framing list and options of a greeting line 1."""
    parts = line1.decode().split(";")
    assert parts[:2] == ["aemp", "1"] and parts[2], line1
    options: dict[str, str | None] = {}
    for item in parts[5:]:
        if item:
            key, sep, value = item.partition("=")
            options[key] = value if sep else None
    return parts[3].split(","), parts[4].split(","), options


def uses_tls(hs: Handshake) -> bool:
    return all(re.match(r"\s*1(\D|$)", fields(hs.lines[s][0])[2].get("tls") or "") for s in SIDES)


# -- the page against itself ------------------------------------------------------


def test_page_has_both_examples() -> None:
    assert NAMES == ["aemp-tls-msgpack", "perl-hmac-json"]
    text = DOC.read_text()
    for hs in HANDSHAKES.values():
        assert [len(hs.lines[s]) for s in SIDES] == [3, 3], hs.name
        assert f"`{hs.secret.decode()}`" in text, "the secret must be named on the page"
        assert packets(hs.name), hs.name


@pytest.mark.parametrize("name", NAMES)
def test_tokens_recomputed_from_the_page(name: str) -> None:
    hs = HANDSHAKES[name]
    for side in SIDES:
        own, peer = hs.lines[side], hs.lines[OTHER[side]]
        method, token, _ = own[2].decode().split(";")
        assert token.encode() == expected_token(method, hs.secret, own, peer), (name, side)
        # the order matters: with the peer's lines first the token would differ
        assert expected_token(method, hs.secret, own, peer) != expected_token(
            method, hs.secret, peer, own
        )


@pytest.mark.parametrize("name", NAMES)
def test_choices_follow_the_rules_on_the_page(name: str) -> None:
    """Section 4: each side takes the first method and framing of the
    peer's lists that it can use; tls_* exactly when both announce tls."""
    hs = HANDSHAKES[name]
    tls = uses_tls(hs)
    for side in SIDES:
        own_accept, own_framings, _ = fields(hs.lines[side][0])
        peer_accept, peer_framings, _ = fields(hs.lines[OTHER[side]][0])
        method, _, framing = hs.lines[side][2].decode().split(";")
        usable = [m for m in peer_accept if m in own_accept and m.startswith("tls_") == tls]
        assert method == usable[0], (name, side)
        assert framing == next(f for f in peer_framings if f in own_framings), (name, side)


def test_tls_roles_and_the_example_2_statements() -> None:
    hs = HANDSHAKES["aemp-tls-msgpack"]
    assert uses_tls(hs)
    nonce_c, nonce_a = hs.lines["C"][1], hs.lines["A"][1]
    assert nonce_a < nonce_c, "the page says the acceptor (smaller nonce) is the TLS client"
    assert (nonce_a[:1], nonce_c[:1]) == (b"1", b"h")
    for side in SIDES:
        assert fields(hs.lines[side][0])[2]["hb"] == f"{Config().monitor_timeout / 4:g}"


def test_example_1_statements() -> None:
    hs = HANDSHAKES["perl-hmac-json"]
    text = DOC.read_text()
    assert not uses_tls(hs)
    size = len(transcript(hs.lines["C"], hs.lines["A"]))
    assert f"({size} bytes in all)" in text
    for side, (head, tail) in (("C", ("83b2f670", "d4ae8fa8e")), ("A", ("f6b42e88", "2a246ccf"))):
        token = hs.lines[side][2].split(b";")[1].decode()
        assert token.startswith(head) and token.endswith(tail)
        assert f"`{head}...{tail}`" in text
    cleartext = hs.secret.hex()
    assert f"`cleartext;{cleartext};json`" in text
    assert f"gives `{cleartext}`" in text


def test_example_2_token_abbreviations() -> None:
    hs = HANDSHAKES["aemp-tls-msgpack"]
    text = DOC.read_text()
    for side in SIDES:
        token = hs.lines[side][2].split(b";")[1].decode()
        assert f"`{token[:8]}...{token[-8:]}`" in text


def _json_stream(raw: bytes) -> list[Any]:
    text, pos, out = raw.decode(), 0, []
    decoder = json.JSONDecoder()
    while pos < len(text):
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)
    return out


def test_packets_of_example_1_are_json_packets() -> None:
    for p in packets("perl-hmac-json"):
        assert p.raw is None
        decoded = _json_stream(p.text.encode())
        assert decoded and all(type(x) is list and type(x[0]) is str for x in decoded)


def test_packets_of_example_2_are_the_msgpack_shown() -> None:
    shown = packets("aemp-tls-msgpack")
    assert [p.side for p in shown] == ["C", "C", "A", "C"]
    for p in shown:
        assert p.raw is not None
        assert msgpack.unpackb(p.raw, raw=False) == json.loads(p.text)
        assert msgpack.packb(json.loads(p.text), use_bin_type=True) == p.raw


# -- the page against the capture and against aemp -------------------------------


def test_example_1_is_the_captured_connection() -> None:
    hs = HANDSHAKES["perl-hmac-json"]
    base = CAPTURE["perl-hmac-json"]
    streams = {
        "C": (base.parent / (base.name + ".c2s.bin")).read_bytes(),
        "A": (base.parent / (base.name + ".s2c.bin")).read_bytes(),
    }
    for side in SIDES:
        head = b"".join(line + b"\n" for line in hs.lines[side])
        assert streams[side].startswith(head), side
        rest = streams[side][len(head) :]
        shown = b"".join(p.text.encode() for p in packets(hs.name) if p.side == side)
        assert rest.startswith(shown), side


@pytest.mark.parametrize("name", NAMES)
def test_aemp_wire_agrees_with_the_page(name: str) -> None:
    hs = HANDSHAKES[name]
    tls = uses_tls(hs)
    for side in SIDES:
        own, peer = hs.lines[side], hs.lines[OTHER[side]]
        own_t = (own[0], own[1])
        peer_t = (peer[0], peer[1])
        auth = wire.parse_auth_line(own[2])
        assert wire.auth_token(auth.method, hs.secret, own_t, peer_t) == auth.token
        # the peer's check of this line passes, and fails for a wrong secret
        greeting = wire.parse_greeting(*peer_t)
        own_greeting = wire.parse_greeting(*own_t)
        assert greeting.tls == own_greeting.tls == tls
        wire.verify_auth_line(
            auth, accept=wire.AUTH_METHODS, tls=tls, secret=hs.secret, own=peer_t, remote=own_t
        )
        if not tls:
            with pytest.raises(AuthError, match="shared secret mismatch"):
                wire.verify_auth_line(
                    auth,
                    accept=wire.AUTH_METHODS,
                    tls=tls,
                    secret=b"wrong-secret",
                    own=peer_t,
                    remote=own_t,
                )
        chosen = wire.choose_auth_method(
            greeting.auth_accept, own_greeting.auth_accept, tls=tls, have_secret=True
        )
        assert chosen == auth.method
        assert wire.choose_framing(greeting.framings, own_greeting.framings) == auth.framing


def _pump(a: wire.Connection, b: wire.Connection) -> dict[str, Any]:
    """Run the handshake between two in-memory connections; return the
    events, and which side wrote the first TLS record (the TLS client)."""
    events: dict[str, Any] = {}
    first_tls: str | None = None
    for _ in range(50):
        for name, x, y in (("C", a, b), ("A", b, a)):
            ev = x.next_event()
            out = x.data_to_send()
            if out:
                if first_tls is None and out[:1] == b"\x16":  # a TLS handshake record
                    first_tls = name
                y.receive_data(out)
            if isinstance(ev, wire.Authenticated):
                events[name] = ev
        if len(events) == 2:
            return {"events": events, "tls_client": first_tls}
    raise AssertionError(f"handshake did not finish: {events}")


def test_two_aemp_nodes_reproduce_example_2(monkeypatch: pytest.MonkeyPatch) -> None:
    hs = HANDSHAKES["aemp-tls-msgpack"]
    server_ctx, client_ctx = ssl_contexts(make_certificate("docs-example", days=1))
    conns = {}
    greetings = {}
    for side in SIDES:
        line1 = hs.lines[side][0]
        _, _, options = fields(line1)
        provider, peeraddr, hb = options["provider"], options["peeraddr"], options["hb"]
        assert provider is not None and provider.startswith("aemp-py-")
        assert peeraddr is not None and hb is not None
        settings = wire.Settings(
            line1.decode().split(";")[2],
            provider,
            secret=hs.secret,
            tls_server=server_ctx,
            tls_client=client_ctx,
            heartbeat=float(hb),
        )
        nonce = hs.lines[side][1]
        monkeypatch.setattr(wire_connection, "make_nonce", lambda nonce=nonce: nonce)
        conn = wire.Connection(settings, peeraddr=peeraddr)
        conn.start()
        greeting = conn.data_to_send()
        assert greeting == line1 + b"\n" + nonce + b"\n", side
        conns[side] = conn
        greetings[side] = greeting
    for side in SIDES:
        conns[OTHER[side]].receive_data(greetings[side])
    result = _pump(conns["C"], conns["A"])
    assert result["tls_client"] == "A", "the acceptor has the smaller nonce"
    for side in SIDES:
        ev = result["events"][side]
        method, token, framing = hs.lines[OTHER[side]][2].decode().split(";")
        assert ev.method == method  # the peer's auth line, as aemp verified it
        assert ev.tls and ev.send_framing == ev.recv_framing == framing
        assert ev.remote_heartbeat == float(fields(hs.lines[OTHER[side]][0])[2]["hb"] or 0)
        own = (hs.lines[side][0], hs.lines[side][1])
        peer = (hs.lines[OTHER[side]][0], hs.lines[OTHER[side]][1])
        assert wire.auth_token(method, hs.secret, peer, own) == token.encode()
    # the packets: aemp encodes them to the bytes shown, and they arrive through TLS
    for p in packets(hs.name):
        sender, receiver = conns[p.side], conns[OTHER[p.side]]
        packet = json.loads(p.text)
        assert sender.encode(packet) == p.raw
        sender.send_packets([packet])
        receiver.receive_data(sender.data_to_send())
        ev = receiver.next_event()
        assert isinstance(ev, wire.Packets) and ev.packets == [packet]
