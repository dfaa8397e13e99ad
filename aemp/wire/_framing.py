# Framing: how packets ([portname, *message]) become bytes and back.
#
# Neither framing has a length prefix or separator: packets are msgpack
# arrays or JSON arrays written back to back, so the decoders are
# incremental and must tell "incomplete, wait for more" from "invalid".
# msgpack's Unpacker does that itself; for JSON a small bracket scanner
# finds where the pending array ends, and only then is the text parsed, so
# a packet split at any byte decodes once complete and a large packet
# arriving in many pieces costs linear, not quadratic, time.
#
# Everything a peer sends either decodes or raises RemoteProtocolError.
# Everything we are asked to send is checked before any byte is produced,
# so a bad message is the caller's MessageError and never a broken stream.
# The encoders take the fast path for flat messages of plain scalars,
# which is what a million packets a second look like.

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

import msgpack

from .._errors import MessageError, RemoteProtocolError

MSGPACK = "msgpack"
JSON = "json"
FRAMINGS = (MSGPACK, JSON)
DEFAULT_FRAMINGS = (MSGPACK, JSON)
DEFAULT_MAX_PACKET = 64 * 1024 * 1024
MAX_DEPTH = 500  # below msgpack's packer limit (511) and Perl JSON::XS's max_depth (512)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

Packet = list[Any]


class Encoder(Protocol):
    name: str

    def encode(self, packet: Sequence[Any]) -> bytes: ...


class Decoder(Protocol):
    name: str

    def feed(self, data: bytes) -> list[Packet]: ...

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
        return value, f"nested more than {MAX_DEPTH} deep"
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


def _refuse(packet: Any, value: Any, reason: str) -> NoReturn:
    raise MessageError(f"cannot send {value!r:.100}: it is {reason}; in packet {packet!r:.200}")


def _check_packet(packet: Any, scalars: frozenset[type], binary: bool) -> None:
    kind = type(packet)
    if (kind is not list and kind is not tuple) and (
        not isinstance(packet, (list, tuple)) or isinstance(packet, msgpack.ExtType)
    ):
        raise MessageError(
            f"a packet must be a list [portname, *message] (got {packet!r:.100}, a {kind.__name__})"
        )
    if packet and not isinstance(packet[0], str):
        raise MessageError(
            f"a packet must start with the port name, a str (got {packet[0]!r:.100}, "
            f"a {type(packet[0]).__name__}); in packet {packet!r:.200}"
        )
    for item in packet:
        if type(item) not in scalars:
            problem = _problem(item, binary, 1)
            if problem:
                _refuse(packet, *problem)


def _explain(packet: Any, binary: bool, exc: Exception) -> MessageError:
    problem = _problem(packet, binary, text=True)
    if problem:
        value, reason = problem
        return MessageError(
            f"cannot send {value!r:.100}: it is {reason}; in packet {packet!r:.200}"
        )
    return MessageError(f"cannot encode packet {packet!r:.200}: {exc}")


def _too_large(packet: Any, size: int, limit: int) -> MessageError:
    return MessageError(
        f"packet of {size} bytes exceeds max_packet ({limit} bytes): {packet!r:.100}"
    )


class MsgpackEncoder:
    """One msgpack array per packet; str as str, bytes as bin."""

    name = MSGPACK

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
        self._pack = msgpack.Packer(use_bin_type=True, datetime=False).pack

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


class JsonEncoder:
    """Compact UTF-8 JSON arrays, as JSON::XS::encode_json writes them."""

    name = JSON

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
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


# -- decoding what the peer sends --------------------------------------------


def _bad_packet(packet: Any) -> RemoteProtocolError:
    if not isinstance(packet, list):
        return RemoteProtocolError(f"packet is not an array: {packet!r:.100}")
    return RemoteProtocolError(
        f"packet does not start with a port name (a string): {packet!r:.100}"
    )


def _too_long(limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"the peer sent a packet larger than max_packet ({limit} bytes)")


def _refused_ext() -> RemoteProtocolError:
    return RemoteProtocolError("the peer sent a msgpack extension type (e.g. a timestamp)")


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _refused_ext()


class MsgpackDecoder:
    """Incremental msgpack decoder: feed bytes, get the complete packets."""

    name = MSGPACK

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
        # max_ext_len=0 refuses timestamps too, which bypass ext_hook
        self._unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=max_packet, max_ext_len=0, ext_hook=_refuse_ext
        )
        self._fed = 0  # bytes fed so far
        self._boundary = 0  # stream offset where the pending packet starts

    def has_partial(self) -> bool:
        return self._fed != self._boundary

    def feed(self, data: bytes) -> list[Packet]:
        up = self._unpacker
        tell = up.tell
        out: list[Packet] = []
        append = out.append
        pos, size = 0, len(data)
        try:
            while True:
                # the unpacker consumes the headers of a partial packet, so its
                # buffer does not bound a packet; we count bytes ourselves
                room = self._max - (self._fed - self._boundary)
                if size - pos <= room:
                    chunk = data[pos:] if pos else data
                elif room <= 0:
                    raise _too_long(self._max)
                else:
                    chunk = data[pos : pos + room]
                pos += len(chunk)
                up.feed(chunk)
                self._fed += len(chunk)
                n = len(out)
                for packet in up:
                    if type(packet) is not list or (packet and type(packet[0]) is not str):
                        raise _bad_packet(packet)
                    append(packet)
                if len(out) > n:  # tell() is where the last whole packet ended
                    self._boundary = tell()
                if pos >= size:
                    return out
        except RemoteProtocolError:
            raise
        except Exception as exc:
            if "max_ext_len" in str(exc):  # how msgpack refuses timestamps for us
                raise _refused_ext() from exc
            raise RemoteProtocolError(f"invalid msgpack from the peer: {exc}") from exc


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_WS = re.compile(r"[ \t\n\r]*")
_PLAIN = re.compile(r'[^"\[\]{}]*')  # outside strings: everything but quotes and brackets
_STR_BODY = re.compile(r'[^"\\]*')  # inside a string: everything but its end and escapes


class JsonDecoder:
    """Incremental decoder for JSON arrays written back to back."""

    name = JSON

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self._max = max_packet
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._parse = json.JSONDecoder(parse_constant=_refuse_constant).raw_decode
        # the pending, incomplete packet: its text so far and the scanner state
        self._parts: list[str] = []
        self._pending = 0  # its size in bytes
        self._depth = 0
        self._in_str = False
        self._escape = False

    def has_partial(self) -> bool:
        return bool(self._parts) or bool(self._utf8.getstate()[0])

    def feed(self, data: bytes) -> list[Packet]:
        try:
            text = self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(
                f"invalid UTF-8 in JSON from the peer: {exc.reason} in {exc.object[:40]!r}"
            ) from exc
        out: list[Packet] = []
        pos, size = 0, len(text)
        if self._parts:
            end = self._scan(text, 0)
            if end < 0:
                self._add_pending(text)
                return out
            pos = end
            self._add_pending(text[:end])
            packet_text = "".join(self._parts)
            self._parts = []
            self._pending = 0
            out.append(self._decode_whole(packet_text))
        parse = self._parse
        while pos < size:
            if text[pos] != "[":
                if text[pos] in " \t\n\r":
                    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                    continue
                raise RemoteProtocolError(f"packet is not a JSON array: {text[pos : pos + 40]!r}")
            try:
                packet, end = parse(text, pos)
            except ValueError as exc:
                if self._scan(text, pos) < 0:  # incomplete: keep it for later
                    self._add_pending(text[pos:])
                    return out
                raise RemoteProtocolError(f"invalid JSON from the peer: {exc}") from exc
            except RecursionError as exc:
                raise RemoteProtocolError("JSON from the peer is nested too deeply") from exc
            if end - pos > self._max >> 2 and len(text[pos:end].encode()) > self._max:
                raise _too_long(self._max)
            if packet and type(packet[0]) is not str:
                raise _bad_packet(packet)
            out.append(packet)
            pos = end
        return out

    def _add_pending(self, text: str) -> None:
        self._parts.append(text)
        self._pending += len(text.encode())
        if self._pending > self._max:
            raise _too_long(self._max)

    def _decode_whole(self, text: str) -> Packet:
        try:
            packet, end = self._parse(text)
        except ValueError as exc:
            raise RemoteProtocolError(f"invalid JSON from the peer: {exc}") from exc
        except RecursionError as exc:
            raise RemoteProtocolError("JSON from the peer is nested too deeply") from exc
        if end != len(text):  # unbalanced brackets fooled the scanner
            raise RemoteProtocolError(f"invalid JSON from the peer: {text[:80]!r}")
        if not isinstance(packet, list) or (packet and type(packet[0]) is not str):
            raise _bad_packet(packet)
        return packet

    def _scan(self, text: str, pos: int) -> int:
        """Continue scanning the pending array; return the index just after
        its closing bracket, or -1 if it has not ended yet."""
        depth, in_str, escape = self._depth, self._in_str, self._escape
        size = len(text)
        while pos < size:
            if in_str:
                if escape:
                    escape = False
                    pos += 1
                    continue
                pos = _STR_BODY.match(text, pos).end()  # type: ignore[union-attr]
                if pos >= size:
                    break
                if text[pos] == '"':
                    in_str = False
                else:
                    escape = True
                pos += 1
                continue
            pos = _PLAIN.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= size:
                break
            char = text[pos]
            pos += 1
            if char == '"':
                in_str = True
            elif char == "[" or char == "{":
                depth += 1
            else:
                depth -= 1
                if depth <= 0:
                    self._depth, self._in_str, self._escape = 0, False, False
                    return pos
        self._depth, self._in_str, self._escape = depth, in_str, escape
        return -1
