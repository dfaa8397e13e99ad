"""The wire core against real captures of Perl AnyEvent::MP 2.x nodes.

Every connection in protocol-vectors/ that has raw .bin streams is checked:
both greetings parse, both auth tokens verify (HMAC-SHA3-512, secret
"demo-secret"), and every packet in both directions decodes, with the
framing each side announced, to exactly the packets (and at exactly the
stream offsets) that the capture's decoded.txt transcript lists.

The mixed/ captures have no .bin files (one direction is CBOR, which aemp
does not speak), so there is nothing to replay there; a stream in a
framing aemp does not speak would be skipped below with that reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aemp.wire import (
    FRAMINGS,
    Greeting,
    auth_token,
    make_decoder,
    parse_auth_line,
    parse_greeting,
    take_line,
    verify_auth_line,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocol-vectors"  # ../shared
SECRET = b"demo-secret"
CAPTURES = sorted(p.with_name(p.name[: -len(".c2s.bin")]) for p in VECTORS.glob("*/*.c2s.bin"))


@dataclass
class Stream:
    lines: list[bytes]
    rest: bytes


@dataclass
class Transcript:
    lines: dict[str, list[str]] = field(default_factory=dict)  # "client"/"server" -> lines
    packets: dict[str, tuple[str, list[tuple[int, int, Any]]]] = field(default_factory=dict)


def _split(raw: bytes, max_lines: int) -> Stream:
    buf = bytearray(raw)
    lines: list[bytes] = []
    while len(lines) < max_lines:
        line = take_line(buf, "line")
        if line is None:
            break
        lines.append(line)
    return Stream(lines, bytes(buf))


def _transcript(path: Path) -> Transcript:
    t = Transcript()
    section: tuple[str, str] | None = None
    for line in path.read_text().splitlines():
        if m := re.match(r"== (client|server) \(\w+\) handshake lines", line):
            section = ("lines", m.group(1))
            t.lines[m.group(1)] = []
        elif m := re.match(r"== (client|server)->\w+ packets, framing=(\w+), (\d+) bytes", line):
            section = ("packets", m.group(1))
            t.packets[m.group(1)] = (m.group(2), [])
        elif line.startswith("=="):
            section = None
        elif section and section[0] == "lines" and (m := re.match(r"  line\d: (.*)", line)):
            t.lines[section[1]].append(m.group(1))
        elif (
            section
            and section[0] == "packets"
            and (m := re.match(r"  @(\d+) len=(\d+) (.*)", line))
        ):
            framing = t.packets[section[1]][0]
            value = json.loads(m.group(3)) if framing == "json" else m.group(3)
            t.packets[section[1]][1].append((int(m.group(1)), int(m.group(2)), value))
    return t


def test_all_captures_are_found() -> None:
    assert len(CAPTURES) == 13
    assert {p.parent.name for p in CAPTURES} == {"json", "reconnect", "two_globals"}


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture(capture: Path) -> None:
    transcript = _transcript(capture.with_name(capture.name + ".decoded.txt"))
    streams = {
        "client": _split(capture.with_name(capture.name + ".c2s.bin").read_bytes(), 3),
        "server": _split(capture.with_name(capture.name + ".s2c.bin").read_bytes(), 3),
    }
    greetings: dict[str, Greeting] = {}
    for side, stream in streams.items():
        # the lines we split off are exactly the handshake lines of the transcript
        assert [line.decode() for line in stream.lines] == transcript.lines[side]
        if len(stream.lines) >= 2:
            greetings[side] = parse_greeting(stream.lines[0], stream.lines[1])
            g = greetings[side]
            assert g.provider == "AE-2.01"
            assert g.options["mproto"] == g.options["gproto"] == "1"
            assert g.auth_accept == ("tls_sha3_512", "hmac_sha3_512", "tls_anon", "cleartext")
            assert not g.tls and g.heartbeat is None
            assert len(g.nonce) == 88
            assert re.fullmatch(r"127\.0\.0\.1:\d+", g.peeraddr or "")

    if not all(len(s.lines) == 3 for s in streams.values()):
        # refused at greeting time: a node dialling itself, or a second
        # connection between two nodes already connected; no auth line
        for stream in streams.values():
            assert len(stream.lines) <= 2 and stream.rest == b""
        assert not transcript.packets
        if len(greetings) == 2 and greetings["client"].nodeid == greetings["server"].nodeid:
            assert capture.name.startswith(("tcp1.", "tcp3."))  # the self-connections
        return

    client, server = streams["client"], streams["server"]
    c_lines = (client.lines[0], client.lines[1])
    s_lines = (server.lines[0], server.lines[1])
    # each side's token hashes its own greeting first
    c_auth, s_auth = parse_auth_line(client.lines[2]), parse_auth_line(server.lines[2])
    assert c_auth.method == s_auth.method == "hmac_sha3_512"
    assert c_auth.token == auth_token("hmac_sha3_512", SECRET, c_lines, s_lines)
    assert s_auth.token == auth_token("hmac_sha3_512", SECRET, s_lines, c_lines)
    assert c_auth.token != auth_token("hmac_sha3_512", b"wrong-secret", c_lines, s_lines)
    # and the way a Connection checks them (Perl accepts these methods)
    accept = greetings["client"].auth_accept
    verify_auth_line(c_auth, accept=accept, tls=False, secret=SECRET, own=s_lines, remote=c_lines)
    verify_auth_line(s_auth, accept=accept, tls=False, secret=SECRET, own=c_lines, remote=s_lines)

    for side, auth in (("client", c_auth), ("server", s_auth)):
        framing, expected = transcript.packets[side]
        assert auth.framing == framing
        if framing not in FRAMINGS:
            pytest.skip(f"{side} stream is in {framing}, which aemp does not speak")
        data = streams[side].rest
        # whole stream at once
        assert make_decoder(framing).feed(data) == [p for _, _, p in expected]
        # byte by byte: each packet completes exactly at its last byte
        decoder = make_decoder(framing)
        ends = []
        for i in range(len(data)):
            for packet in decoder.feed(data[i : i + 1]):
                ends.append((i + 1, packet))
        assert ends == [(off + length, p) for off, length, p in expected]
        assert not decoder.has_partial()


def test_captures_contain_the_documented_packets() -> None:
    """Spot checks against what the captures hold, so the replay above cannot pass vacuously."""
    base = VECTORS / "json" / "seedproxy.conn1"
    client = _split((base.parent / (base.name + ".c2s.bin")).read_bytes(), 3)
    server = _split((base.parent / (base.name + ".s2c.bin")).read_bytes(), 3)
    sent = make_decoder("json").feed(client.rest)
    received = make_decoder("json").feed(server.rest)
    assert sent[0] == ["", "g_slave"] and len(sent) == 8
    assert ["", "g_find", "seed"] in sent
    assert ["", "g_upd", "demo_family", None, ["keyA"]] in sent
    assert received[0] == ["", "g_global"]
    assert ["", "g_found", "seed", ["127.0.0.1:4040"]] in received
    assert ["", "g_chg2", "demo_family", {"keyB": {"x": 1, "list": [1, 2]}}, []] in received
