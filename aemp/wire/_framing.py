# Framing: how packets ([portname, *message]) become bytes, per direction.
#
# msgpack: one msgpack array per packet, str as str, bytes as bin; json:
# compact UTF-8 JSON arrays as JSON::XS writes them. Packets are written
# back to back (the decoders are in _decoding.py).
#
# Everything we are asked to send is checked before any byte is produced,
# so a bad message is the caller's MessageError naming the bad value, and
# never a stream the peer must drop. The checks take a fast path for flat
# messages of plain scalars, which is what a million packets a second
# look like; only containers and unusual types get a closer look.

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import msgpack

from .._errors import MessageError, RemoteProtocolError
from ._decoding import DEFAULT_MAX_PACKET as DEFAULT_MAX_PACKET
from ._decoding import JSON, MSGPACK, JsonDecoder, MsgpackDecoder, Packet, brief

FRAMINGS = (MSGPACK, JSON)
DEFAULT_FRAMINGS = (MSGPACK, JSON)
MAX_DEPTH = 500  # below msgpack's packer limit (511) and Perl JSON::XS's max_depth (512)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class Encoder(Protocol):
    name: str

    def encode(self, packet: Sequence[Any]) -> bytes: ...

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes: ...

    out: list[bytes]  # where append_message() puts its bytes

    def append_message(self, portname: str, msg: Sequence[Any]) -> None: ...


class Decoder(Protocol):
    name: str
    on_error: Callable[[RemoteProtocolError], None] | None

    def feed(self, data: bytes) -> list[Packet]: ...

    def packets(
        self, data: bytes, on_error: Callable[[RemoteProtocolError], None] | None = None
    ) -> Iterable[Packet]: ...

    def has_partial(self) -> bool: ...


def choose_framing(remote: Sequence[str], ours: Sequence[str]) -> str:
    """The framing we send: the first in the peer's list that we speak."""
    for name in remote:
        if name in ours:
            return name
    raise RemoteProtocolError(
        f"no common framing: the peer offers {list(remote)}, we speak {list(ours)}"
    )


def make_encoder(framing: str, max_packet: int = DEFAULT_MAX_PACKET) -> Encoder:
    if framing == MSGPACK:
        return MsgpackEncoder(max_packet)
    if framing == JSON:
        return JsonEncoder(max_packet)
    raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")


def make_decoder(framing: str, max_packet: int = DEFAULT_MAX_PACKET) -> Decoder:
    if framing == MSGPACK:
        return MsgpackDecoder(max_packet)
    if framing == JSON:
        return JsonDecoder(max_packet)
    raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")


# -- checking what we send ---------------------------------------------------

_NONE = type(None)
# types that need no closer look (the packer refuses ints out of range itself)
_SCALARS_BIN: frozenset[type] = frozenset({str, int, float, bool, bytes, _NONE})
# in JSON ints and floats have limits; json.dumps refuses NaN but not big ints
_SCALARS_JSON: frozenset[type] = frozenset({str, bool, _NONE})
_SCALARS_JSON_FAST: frozenset[type] = _SCALARS_JSON | {float}


def _problem(
    value: Any, binary: bool, depth: int = 0, text: bool = False
) -> tuple[Any, str] | None:
    """The first value inside ``value`` that cannot be sent, and why.

    ``text`` also checks that every str can be encoded as UTF-8 (no lone
    surrogates); that is left to the encoders on the fast path.
    """
    if isinstance(value, str):
        if text and not _utf8_ok(value):
            return value, "a str that is not valid Unicode (a lone surrogate)"
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return value, "an int outside the 64-bit range -2**63 .. 2**64-1"
    if isinstance(value, float):
        if binary or math.isfinite(value):
            return None
        return value, "a NaN or infinite float, which JSON cannot carry"
    if isinstance(value, (bytes, bytearray)):
        if binary:
            return None
        return value, "binary data, which the json framing cannot carry (send str)"
    if depth >= MAX_DEPTH:
        return value, f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, (list, tuple)) and not isinstance(value, msgpack.ExtType):
        for item in value:
            problem = _problem(item, binary, depth + 1, text)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return key, f"a dict key of type {type(key).__name__} (keys must be str)"
            problem = _problem(key, binary, depth + 1, text) or _problem(
                item, binary, depth + 1, text
            )
            if problem:
                return problem
        return None
    return value, (
        f"a {type(value).__name__} (only None, bool, int, float, str, "
        f"{'bytes, ' if binary else ''}list, tuple and dict can be sent)"
    )


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cannot_send(packet: Any, value: Any, reason: str) -> MessageError:
    return MessageError(
        f"cannot send {brief(value, 100)}: it is {reason}; in packet {brief(packet, 200)}"
    )


def _check_packet(packet: Any, scalars: frozenset[type], binary: bool) -> None:
    kind = type(packet)
    if (kind is not list and kind is not tuple) and (
        not isinstance(packet, (list, tuple)) or isinstance(packet, msgpack.ExtType)
    ):
        raise MessageError(
            f"a packet must be a list [portname, *message] "
            f"(got {brief(packet, 100)}, a {kind.__name__})"
        )
    if packet and not isinstance(packet[0], str):
        raise MessageError(
            f"a packet must start with the port name, a str (got {brief(packet[0], 100)}, "
            f"a {type(packet[0]).__name__}); in packet {brief(packet, 200)}"
        )
    for item in packet:
        if type(item) not in scalars:
            problem = _problem(item, binary, 1)
            if problem:
                raise _cannot_send(packet, *problem)


def _explain(packet: Any, binary: bool, exc: Exception) -> MessageError:
    problem = _problem(packet, binary, text=True)
    if problem:
        return _cannot_send(packet, *problem)
    return MessageError(f"cannot encode packet {brief(packet, 200)}: {exc}")


def _too_large(packet: Any, size: int, limit: int) -> MessageError:
    return MessageError(
        f"packet of {size} bytes exceeds max_packet ({limit} bytes): {brief(packet, 100)}"
    )


class MsgpackEncoder:
    """One msgpack array per packet; str as str, bytes as bin."""

    name = MSGPACK

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
        self._pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
        self.out: list[bytes] = []

    def encode(self, packet: Sequence[Any], _scalars: frozenset[type] = _SCALARS_BIN) -> bytes:
        # inlined check for the common flat packet: this runs a million times a second
        if type(packet) is list and packet and type(packet[0]) is str:
            for item in packet:
                if type(item) not in _scalars:
                    _check_packet(packet, _scalars, True)
                    break
        else:
            _check_packet(packet, _scalars, True)
        try:
            data: bytes = self._pack(packet)
        except Exception as exc:  # the packer resets itself; say which value it was
            raise _explain(packet, True, exc) from exc
        if len(data) > self._max:
            raise _too_large(packet, len(data), self._max)
        return data

    def encode_message(
        self, portname: str, msg: Sequence[Any], _scalars: frozenset[type] = _SCALARS_BIN
    ) -> bytes:
        """encode([portname, *msg]) for a non-empty msg, a little faster."""
        for item in msg:
            if type(item) not in _scalars:
                return self.encode([portname, *msg])
        packet = [portname, *msg]
        try:
            data: bytes = self._pack(packet)
        except Exception as exc:
            raise _explain(packet, True, exc) from exc
        if len(data) > self._max:
            raise _too_large(packet, len(data), self._max)
        return data

    def append_message(
        self, portname: str, msg: Sequence[Any], _scalars: frozenset[type] = _SCALARS_BIN
    ) -> None:
        """self.out.append(encode_message(portname, msg)), in one call: a
        sender that collects packets saves a call per packet."""
        for item in msg:
            if type(item) not in _scalars:
                self.out.append(self.encode([portname, *msg]))
                return
        packet = [portname, *msg]
        try:
            data: bytes = self._pack(packet)
        except Exception as exc:
            raise _explain(packet, True, exc) from exc
        if len(data) > self._max:
            raise _too_large(packet, len(data), self._max)
        self.out.append(data)


class JsonEncoder:
    """Compact UTF-8 JSON arrays, as JSON::XS::encode_json writes them."""

    name = JSON

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
        self.out: list[bytes] = []
        self._dumps = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode

    def encode(
        self, packet: Sequence[Any], _scalars: frozenset[type] = _SCALARS_JSON_FAST
    ) -> bytes:
        # json.dumps would write any int and turn non-str keys into strings
        # without a word, so those are checked here; the rest it refuses itself
        if type(packet) is list and packet and type(packet[0]) is str:
            for item in packet:
                kind = type(item)
                if kind is int:
                    if _INT_MIN <= item <= _INT_MAX:
                        continue
                elif kind in _scalars:
                    continue
                _check_packet(packet, _SCALARS_JSON, False)
                break
        else:
            _check_packet(packet, _SCALARS_JSON, False)
        try:
            data = self._dumps(packet).encode("utf-8")
        except Exception as exc:  # e.g. a lone surrogate in a str
            raise _explain(packet, False, exc) from exc
        if len(data) > self._max:
            raise _too_large(packet, len(data), self._max)
        return data

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes:
        """encode([portname, *msg])."""
        return self.encode([portname, *msg])

    def append_message(self, portname: str, msg: Sequence[Any]) -> None:
        """self.out.append(encode_message(portname, msg))."""
        self.out.append(self.encode([portname, *msg]))
