"""Inputs for fuzzing the sans-IO core's data phase."""

# Shared by the CI test (tests/test_fuzz_wire.py, a few seconds) and the
# long run (bench/bench_fuzz.py, a million inputs and more).
#
# Random bytes alone seldom get past a packet's first byte, so an input is
# built from real packets of both framings (nested values, maps, big and
# small numbers, strings with escapes), then mutated: bytes flipped,
# inserted, deleted or cut off, packets truncated or joined with garbage,
# runs of empty containers (the decoders' value limit) and headers that
# promise more than follows. The result is fed split at random boundaries.
# The invariant: any input decodes into packets (lists starting with a str)
# or raises RemoteProtocolError, nothing else, and no more than
# max_objects values or max_packet bytes are ever handed out in a packet.
#
# Pure Python with a seeded random.Random: the same seed gives the same
# inputs, so a failure of the long run is repeated by its seed and index.

from __future__ import annotations

import json
import random
from typing import Any

import msgpack

from aemp import RemoteProtocolError
from aemp.wire import NEED_DATA, Authenticated, Connection, Settings, State, make_decoder
from aemp.wire._decoding import JSON, MSGPACK, brief

# small limits, so that inputs of a few KB reach them
FUZZ_MAX_PACKET = 4096
FUZZ_MAX_OBJECTS = 256

_TEXT = ["", "a", "port", "é", "\u20ac", "\U0001f600", '"', "\\", "\x00", ",", "[", "{", ":"]


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, -33, 127, 128, 255, 65536, -(2**63), 2**64 - 1, 2**31])
    if kind == 2:
        return rng.choice([0.5, -1e300, 1e-300, 3.0])
    if kind in (3, 4):
        return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(6)))
    if kind == 5:
        return rng.randbytes(rng.randrange(8))
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 8:
        return [[] for _ in range(rng.randrange(300))]  # runs of empty containers
    return {str(_value(rng, 9)): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _packet(rng: random.Random, framing: str) -> bytes:
    packet = [rng.choice(["", "p", "port#x"]), *(_value(rng, 1) for _ in range(rng.randrange(4)))]
    if framing == MSGPACK:
        return bytes(msgpack.packb(packet, use_bin_type=True))
    text = json.dumps(packet, default=lambda b: b.hex(), ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")


_HEADERS = [b"\xdd\xff\xff\xff\xff", b"\xdf\x00\x10\x00\x00", b"\xdb\x7f\xff\xff\xff", b"\xc1"]
_HEADERS += [b"\xd6\xff\x00\x00\x00\x00", b"\x91", b"\x90" * 40, b"[[[[", b"]", b'"', b"\xff"]


def _mutate(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randrange(4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 6))
        elif op == 2:
            del data[pos : pos + rng.randrange(1, 6)]
        elif op == 3:
            data[pos:pos] = rng.choice(_HEADERS)
        elif op == 4:
            del data[pos:]
        else:
            data[pos:pos] = data[: rng.randrange(len(data) + 1)]  # a piece repeated


def make_input(rng: random.Random, framing: str) -> bytes:
    """One fuzz input: a few real packets, most of the time mutated."""
    data = bytearray(b"".join(_packet(rng, framing) for _ in range(rng.randrange(1, 5))))
    if rng.random() < 0.1 and framing == MSGPACK:
        data += b"\xdc\x01\x00\xa0" + b"\x90" * 255  # just over the value limit
    if rng.random() < 0.8:
        _mutate(rng, data)
    return bytes(data)


def split(rng: random.Random, data: bytes) -> list[bytes]:
    """data in pieces cut at random places (single bytes, a few, or all at once)."""
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, rng.randrange(1, 64), len(data)])
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


def open_connection(framing: str) -> Connection:
    """A connection in the data phase, receiving in ``framing`` (handshake in memory)."""
    ends = [
        Connection(
            Settings(
                nodeid, "fuzz", secret="fuzz", framing_format=[framing],
                max_packet=FUZZ_MAX_PACKET, max_objects=FUZZ_MAX_OBJECTS,
            ),
            peeraddr="fuzz:1",
        )
        for nodeid in ("A", "B")
    ]  # fmt: skip
    for end in ends:
        end.start()
    done = [False, False]
    while not all(done):
        for i, end in enumerate(ends):
            ends[1 - i].receive_data(end.data_to_send())
            while not done[1 - i]:
                event = ends[1 - i].next_event()
                if event is NEED_DATA:
                    break
                done[1 - i] = isinstance(event, Authenticated)
    return ends[1]


def _bad(packet: Any) -> str | None:
    if type(packet) is not list or (packet and type(packet[0]) is not str):
        return f"decoded a packet that is not [str, ...]: {brief(packet, 200)}"
    return None


def check_input(framing: str, pieces: list[bytes], conn: Connection | None = None) -> str | None:
    """Feed pieces to a fresh decoder, or to ``conn`` (an open Connection,
    by turns through its fast path and its events); None if the invariant
    held, else what broke it."""
    try:
        if conn is None:
            decoder = make_decoder(framing, FUZZ_MAX_PACKET, FUZZ_MAX_OBJECTS)
            for piece in pieces:
                for packet in decoder.feed(piece):
                    if bad := _bad(packet):
                        return bad
            return None
        for i, piece in enumerate([*pieces, b""]):
            if i % 2 and piece:
                for packet in conn.receive_iter(piece):
                    if bad := _bad(packet):
                        return bad
                continue
            conn.receive_data(piece)
            while (event := conn.next_event()) is not NEED_DATA:
                packets = getattr(event, "packets", None)
                if packets is None:  # closed cleanly at the end
                    return None if not piece else f"unexpected event {event!r}"
                for packet in packets:
                    if bad := _bad(packet):
                        return bad
    except RemoteProtocolError:
        if conn is not None and conn.state is not State.FAILED:
            return f"RemoteProtocolError left the connection {conn.state.value}"
        return None
    except Exception as exc:  # the invariant: nothing but RemoteProtocolError
        return f"{type(exc).__name__}: {exc!s:.200}"
    return None


FRAMINGS = (MSGPACK, JSON)
