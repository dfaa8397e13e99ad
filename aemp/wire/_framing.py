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
#
# A packet's size is bounded before it is packed: the fast path adds up
# the lengths of its str and bytes (a lower bound of the encoded size),
# and the closer look walks containers adding up the same bound, stopping
# as soon as it passes max_packet. So a message far over the limit (a
# GiB of bytes, or a list of a million references to one large str) is
# refused before a byte is produced; one that the bound lets through is
# packed and its exact size checked. The bound errs low only for
# non-ASCII text and JSON escapes, so what is packed only to be refused is
# at most a few times max_packet, never the whole message. The number of
# values (the elements of its lists and dicts at every depth, keys
# included) is bounded the same way (max_objects), so that we never send
# what a peer with the same limit would refuse.

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import msgpack

from .._errors import MessageError, RemoteProtocolError
from ._decoding import DEFAULT_MAX_OBJECTS as DEFAULT_MAX_OBJECTS
from ._decoding import DEFAULT_MAX_PACKET as DEFAULT_MAX_PACKET
from ._decoding import JSON, MSGPACK, JsonDecoder, MsgpackDecoder, Packet, brief

FRAMINGS = (MSGPACK, JSON)
DEFAULT_FRAMINGS = (MSGPACK, JSON)
MAX_DEPTH = 500  # below msgpack's packer limit (511) and Perl JSON::XS's max_depth (512)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# A sender that collects packets with append_message() hears of a long
# batch from the encoder's full(), so that it can write the batch and look
# at what is unsent before taking more: a burst of sends within one loop
# turn is bounded like any other.
OUT_PACKETS = 1024
OUT_BYTES = 64 * 1024


def _nothing() -> None:
    pass


class Encoder(Protocol):
    name: str

    def encode(self, packet: Sequence[Any]) -> bytes: ...

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes: ...

    out: list[bytes]  # where append_message() puts its bytes
    # called by append_message() once out holds OUT_PACKETS packets, or
    # after it put a packet of more than OUT_BYTES there
    full: Callable[[], None]

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


def make_encoder(
    framing: str, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
) -> Encoder:
    if framing == MSGPACK:
        return MsgpackEncoder(max_packet, max_objects)
    if framing == JSON:
        return JsonEncoder(max_packet, max_objects)
    raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")


def make_decoder(
    framing: str, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
) -> Decoder:
    if framing == MSGPACK:
        return MsgpackDecoder(max_packet, max_objects)
    if framing == JSON:
        return JsonDecoder(max_packet, max_objects)
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


def _over_limit(key: str, text: str) -> MessageError:
    error = MessageError(text)
    error.limit = key  # type: ignore[attr-defined]  # check_unsent tells size from kind by it
    return error


def _too_large(packet: Any, size: int, limit: int, at_least: bool = False) -> MessageError:
    return _over_limit(
        "max_packet",
        f"packet of {'at least ' if at_least else ''}{size} bytes exceeds max_packet "
        f"({limit} bytes): {brief(packet, 100)}",
    )


def _too_many(packet: Any, objects: int, limit: int, at_least: bool = False) -> MessageError:
    return _over_limit(
        "max_objects",
        f"packet of {'at least ' if at_least else ''}{objects} values exceeds max_objects "
        f"({limit}; the elements of its lists and dicts, keys included): {brief(packet, 100)}",
    )


# the most bytes a number, bool or null takes: "-1.7976931348623157e+308" in JSON
_MAX_SCALAR = 24


def _bounds(packet: Any, max_bytes: int, max_objects: int) -> tuple[int, int]:
    """(high, values) of a packet: the most bytes it takes in any framing
    and its values (the elements of its lists and dicts, keys included,
    at every depth: what the peer's decoder counts). Raises
    MessageError naming the limit once the fewest bytes it takes in any
    framing pass max_bytes, or its values pass max_objects: a packet far
    over a limit costs a walk up to the limit, not to its end (nor forever,
    for one that contains itself). Without recursion: depth is checked
    elsewhere, and the nesting costs no stack here."""
    low = high = 0
    objects = -1  # the packet's own list is no value of it
    stack = [packet]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        objects += 1
        if t is str:
            n = len(v)
            low += n + 1
            high += 6 * n + 5  # JSON's \u00XX escapes; UTF-8 takes at most 4
        elif t is bytes or t is bytearray:
            n = len(v)
            low += n + 1
            high += n + 5
        elif t is list or t is tuple or isinstance(v, (list, tuple)):
            low += 1
            high += 5 + len(v)  # a header, or brackets and commas
            if len(v) > max_objects:
                raise _too_many(packet, objects + len(v), max_objects, at_least=True)
            extend(v)
        elif isinstance(v, dict):
            low += 1
            high += 5 + 2 * len(v)
            if 2 * len(v) > max_objects:
                raise _too_many(packet, objects + 2 * len(v), max_objects, at_least=True)
            for key, item in v.items():
                push(key)
                push(item)
        else:
            low += 1
            high += _MAX_SCALAR
            continue
        if low > max_bytes:
            raise _too_large(packet, low, max_bytes, at_least=True)
        if objects + len(stack) > max_objects:
            raise _too_many(packet, objects + len(stack), max_objects, at_least=True)
    return high, objects


def _check_packet(
    packet: Any,
    scalars: frozenset[type],
    binary: bool,
    max_bytes: int = DEFAULT_MAX_PACKET,
    max_objects: int = DEFAULT_MAX_OBJECTS,
) -> None:
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
    _bounds(packet, max_bytes, max_objects)  # first: it stops early on a huge packet
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


def check_unsent(
    packet: Sequence[Any],
    framings: Sequence[str],
    max_packet: int = DEFAULT_MAX_PACKET,
    max_objects: int = DEFAULT_MAX_OBJECTS,
) -> int:
    """The most bytes a packet takes in any framing. MessageError if a
    packet whose framing is not known yet (one queued while connecting)
    would exceed max_packet or max_objects in any of
    ``framings``, the ones we might send in: the stricter of them decides,
    so that it is refused at snd as it would be on an open link, rather
    than dropped with the link when it comes up. A value that one framing
    cannot carry at all (bytes in JSON) is not a matter of size and is
    left to the link. Exact, yet cheap for a packet clearly under the
    limit: only one that might be over is encoded to find out."""
    high, _ = _bounds(packet, max_packet, max_objects)
    if high <= max_packet:
        return high
    for framing in framings:
        try:
            make_encoder(framing, max_packet, max_objects).encode(packet)
        except MessageError as exc:
            if getattr(exc, "limit", None):
                raise
    return high


_NONE_T = type(None)
# the scalars of the fast path that take the same few bytes whatever their value
_FIXED: frozenset[type] = frozenset({int, float, bool, _NONE_T})


class MsgpackEncoder:
    """One msgpack array per packet; str as str, bytes as bin."""

    name = MSGPACK

    def __init__(
        self, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> None:
        self._max = max_packet
        self._max_objects = max_objects
        # every object takes a byte at least: a packet of no more bytes than
        # this is within both limits, with no count of its objects
        self._quick = min(max_packet, max_objects)
        self._pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
        self.out: list[bytes] = []
        self.full: Callable[[], None] = _nothing
        self._fast()

    def _over(self, packet: Sequence[Any], data: bytes) -> None:
        """Raise unless an encoded packet longer than _quick is within the limits."""
        if len(data) > self._max:
            raise _too_large(packet, len(data), self._max)
        _bounds(packet, self._max, self._max_objects)

    def encode(self, packet: Sequence[Any]) -> bytes:
        """One packet as bytes; MessageError naming the value or the limit."""
        _check_packet(packet, _SCALARS_BIN, True, self._max, self._max_objects)
        try:
            data: bytes = self._pack(packet)
        except Exception as exc:  # the packer resets itself; say which value it was
            raise _explain(packet, True, exc) from exc
        if len(data) > self._quick:
            self._over(packet, data)
        return data  # replaced per instance by _fast(), with a fast path

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes:
        """encode([portname, *msg]) for a non-empty msg, a little faster."""
        return self.encode([portname, *msg])  # replaced per instance by _fast()

    def append_message(self, portname: str, msg: Sequence[Any]) -> None:
        """self.out.append(encode_message(portname, msg)), in one call: a
        sender that collects packets saves a call per packet. Then full()
        if out is long (OUT_PACKETS) or the packet large (OUT_BYTES)."""
        data = self.encode([portname, *msg])  # replaced per instance by _fast()
        out = self.out
        out.append(data)
        if len(out) >= OUT_PACKETS or len(data) > OUT_BYTES:
            self.full()

    def _fast(self) -> None:
        # The hot paths, as closures: the limits and the packer are cells,
        # not attributes, which pays for adding up the lengths of str and
        # bytes. A flat message of plain scalars goes this way; anything
        # else takes encode(), which looks closer.
        limit, quick, pack, checked = self._max, self._quick, self._pack, self.encode
        fixed = _FIXED
        out_packets, out_bytes = OUT_PACKETS, OUT_BYTES

        def encode(packet: Sequence[Any]) -> bytes:
            # inlined check for the common flat packet: this runs a million
            # times a second; the lengths of its str and bytes bound its size
            if type(packet) is not list or not packet or type(packet[0]) is not str:
                return checked(packet)
            size = 0
            for item in packet:  # str first: the commonest, and it needs its length
                kind = type(item)
                if kind is str:
                    size += len(item)
                elif kind not in fixed:
                    if kind is not bytes:
                        return checked(packet)
                    size += len(item)
            if size > limit:
                raise _too_large(packet, size, limit, at_least=True)
            try:
                data: bytes = pack(packet)
            except Exception as exc:  # the packer resets itself; say which value it was
                raise _explain(packet, True, exc) from exc
            if len(data) > quick:
                self._over(packet, data)
            return data

        def encode_message(portname: str, msg: Sequence[Any]) -> bytes:
            size = 0
            for item in msg:
                kind = type(item)
                if kind is str:
                    size += len(item)
                elif kind not in fixed:
                    if kind is not bytes:
                        return encode([portname, *msg])
                    size += len(item)
            packet = [portname, *msg]
            if size > limit:
                raise _too_large(packet, size, limit, at_least=True)
            try:
                data: bytes = pack(packet)
            except Exception as exc:
                raise _explain(packet, True, exc) from exc
            if len(data) > quick:
                self._over(packet, data)
            return data

        def append_message(portname: str, msg: Sequence[Any]) -> None:
            size = 0
            for item in msg:
                kind = type(item)
                if kind is str:
                    size += len(item)
                elif kind not in fixed:
                    if kind is not bytes:
                        data = encode([portname, *msg])
                        break
                    size += len(item)
            else:
                packet = [portname, *msg]
                if size > limit:
                    raise _too_large(packet, size, limit, at_least=True)
                try:
                    data = pack(packet)
                except Exception as exc:
                    raise _explain(packet, True, exc) from exc
                if len(data) > quick:
                    self._over(packet, data)
            out = self.out
            out.append(data)
            if len(out) >= out_packets or len(data) > out_bytes:
                self.full()

        self.encode = encode  # type: ignore[method-assign]
        self.encode_message = encode_message  # type: ignore[method-assign]
        self.append_message = append_message  # type: ignore[method-assign]


class JsonEncoder:
    """Compact UTF-8 JSON arrays, as JSON::XS::encode_json writes them."""

    name = JSON

    def __init__(
        self, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> None:
        self._max = max_packet
        self._max_objects = max_objects
        self._quick = min(max_packet, max_objects)
        self.out: list[bytes] = []
        self.full: Callable[[], None] = _nothing
        self._dumps = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode

    def encode(
        self, packet: Sequence[Any], _scalars: frozenset[type] = _SCALARS_JSON_FAST
    ) -> bytes:
        # json.dumps would write any int and turn non-str keys into strings
        # without a word, so those are checked here; the rest it refuses itself
        if type(packet) is list and packet and type(packet[0]) is str:
            size = 0
            for item in packet:
                kind = type(item)
                if kind is str:
                    size += len(item)
                    continue
                if kind is int:
                    if _INT_MIN <= item <= _INT_MAX:
                        continue
                elif kind in _scalars:
                    continue
                _check_packet(packet, _SCALARS_JSON, False, self._max, self._max_objects)
                break
            else:
                if size > self._max:
                    raise _too_large(packet, size, self._max, at_least=True)
        else:
            _check_packet(packet, _SCALARS_JSON, False, self._max, self._max_objects)
        try:
            data = self._dumps(packet).encode("utf-8")
        except Exception as exc:  # e.g. a lone surrogate in a str
            raise _explain(packet, False, exc) from exc
        if len(data) > self._quick:
            if len(data) > self._max:
                raise _too_large(packet, len(data), self._max)
            _bounds(packet, self._max, self._max_objects)
        return data

    def encode_message(self, portname: str, msg: Sequence[Any]) -> bytes:
        """encode([portname, *msg])."""
        return self.encode([portname, *msg])

    def append_message(self, portname: str, msg: Sequence[Any]) -> None:
        """self.out.append(encode_message(portname, msg)), then full() as
        MsgpackEncoder's does."""
        data = self.encode([portname, *msg])
        out = self.out
        out.append(data)
        if len(out) >= OUT_PACKETS or len(data) > OUT_BYTES:
            self.full()
