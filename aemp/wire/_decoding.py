# Decoding what the peer sends: incremental decoders for packets written
# back to back with no length prefix or separator, so each must tell
# "incomplete, wait for more" from "invalid".
#
# msgpack's Unpacker makes that distinction itself; we count bytes, since
# it consumes the headers of a partial packet and so its buffer limit does
# not bound a packet, and objects: a byte of msgpack can become a 64-byte
# Python list, so a packet's bytes alone do not bound its memory. Every
# value takes a byte, so a packet of no more bytes than max_objects is
# within it and is decoded as it is; only a packet that grows past that is
# decoded again from its start by an unpacker whose hooks add the length
# of every array and map it builds to the packet's count. Past
# max_objects the hook raises, the unpacker stops, and the connection
# fails naming the limit. The common small packet costs nothing more.
# The unpacker's own per-container limits (max_array_len, max_map_len) are
# set to max_objects as well, so one header cannot make it allocate more.
#
# For JSON a small bracket scanner finds where the pending array ends,
# and only then is the text parsed: a packet
# split at any byte decodes once complete, and a large packet arriving in
# many pieces costs linear, not quadratic, time. A JSON value takes a
# character at least, so a packet of no more characters than max_objects
# is parsed at once; a longer one has its commas, colons and opening
# brackets outside strings counted first (an upper bound of its values).
#
# Everything a peer sends either decodes into packets (lists whose first
# element is a str) or raises RemoteProtocolError, nothing else.

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import msgpack

from .._errors import RemoteProtocolError

MSGPACK = "msgpack"
JSON = "json"
DEFAULT_MAX_PACKET = 64 * 1024 * 1024
# values in one packet (the elements of its arrays and maps at every depth,
# keys included; each takes a byte at least): a packet of empty lists is 1 byte of msgpack but
# 64 bytes of Python each, so this, not max_packet, bounds the memory one
# packet costs the receiver (about 64 bytes a value at worst: 256 MiB).
# Raise it for messages that carry millions of numbers in lists (or send
# them as bytes); the default is far above any packet aemp sends itself.
DEFAULT_MAX_OBJECTS = 4 * 1024 * 1024

Packet = list[Any]


class _Enough(Exception):
    """brief() has written its limit."""


def brief(value: Any, limit: int) -> str:
    """repr(value), cut after `limit` characters, in time and stack depth
    bounded by `limit`: repr() itself would walk all of a huge value, and
    recurse without bound into one nested hundreds of levels deep, before
    an error message could cut it short."""
    out: list[str] = []
    left = limit

    def put(text: str) -> None:
        nonlocal left
        out.append(text[:left])
        left -= len(text)
        if left <= 0:
            raise _Enough

    def walk(v: Any) -> None:  # every level writes a bracket first: depth <= limit
        if isinstance(v, list | tuple):
            put("[" if isinstance(v, list) else "(")
            for i, item in enumerate(v):
                if i:
                    put(", ")
                walk(item)
            put("]" if isinstance(v, list) else ("," if len(v) == 1 else "") + ")")
        elif isinstance(v, dict):
            put("{")
            for i, (k, item) in enumerate(v.items()):
                put(", " if i else "")
                walk(k)
                put(": ")
                walk(item)
            put("}")
        elif isinstance(v, str | bytes | bytearray) and len(v) > limit:
            put(repr(v[:limit]))  # only a head is shown: repr no more than that
        elif isinstance(v, int) and v.bit_length() > 4 * limit:
            put(f"<int of {v.bit_length()} bits>")  # repr would take time, or refuse
        else:
            put(repr(v))

    try:
        walk(value)
    except _Enough:
        pass
    return "".join(out)


def _bad_packet(packet: Any) -> RemoteProtocolError:
    if not isinstance(packet, list):
        return RemoteProtocolError(f"packet is not an array: {brief(packet, 100)}")
    return RemoteProtocolError(
        f"packet does not start with a port name (a string): {brief(packet, 100)}"
    )


def _too_long(limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"the peer sent a packet larger than max_packet ({limit} bytes)")


def _too_many(limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"the peer sent a packet of more than max_objects ({limit}) values "
        "(the elements of its arrays and maps, keys included)"
    )


class _TooMany(Exception):
    """Raised by the unpacker's hooks, through the unpacker."""


def _refused_ext() -> RemoteProtocolError:
    return RemoteProtocolError("the peer sent a msgpack extension type (e.g. a timestamp)")


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _refused_ext()


class MsgpackDecoder:
    """Incremental msgpack decoder: feed bytes, get the complete packets."""

    name = MSGPACK

    def __init__(
        self, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> None:
        self._max = max_packet
        self._max_objects = max_objects
        # a packet of no more bytes than this is within both limits uncounted
        self._quick = min(max_packet, max_objects)
        # told of a RemoteProtocolError before it is raised, when packets()
        # is not given its own on_error
        self.on_error: Callable[[RemoteProtocolError], None] | None = None
        # the values of the packet being decoded so far (while counting), in
        # a cell the hooks share with packets(), which empties it per packet
        count = self._count = [0]

        def counted(container: Any) -> Any:
            n = count[0] = count[0] + len(container)
            if n > max_objects:
                raise _TooMany
            return container

        def counted_map(container: dict[Any, Any]) -> dict[Any, Any]:
            n = count[0] = count[0] + 2 * len(container)
            if n > max_objects:
                raise _TooMany
            return container

        self._hooks = {"list_hook": counted, "object_hook": counted_map}
        self._unpacker = self._make_unpacker(counting=False)
        self._counting = False  # is _unpacker the counting one?
        # offsets in what _unpacker was fed: all of it, and where the pending packet starts
        self._fed = 0
        self._boundary = 0
        # while not counting: the pending packet's bytes, to decode it again
        # with a counting unpacker once it grows past _quick
        self._held = bytearray()

    def _make_unpacker(self, counting: bool) -> msgpack.Unpacker:
        # max_ext_len=0 refuses timestamps too, which bypass ext_hook
        return msgpack.Unpacker(
            raw=False,
            max_buffer_size=self._max,
            max_ext_len=0,
            ext_hook=_refuse_ext,
            max_array_len=self._max_objects,
            max_map_len=self._max_objects // 2,
            **(self._hooks if counting else {}),
        )

    def has_partial(self) -> bool:
        return self._fed != self._boundary

    def feed(self, data: bytes) -> list[Packet]:
        return list(self.packets(data))

    def packets(
        self, data: bytes, on_error: Callable[[RemoteProtocolError], None] | None = None
    ) -> Iterator[Packet]:
        """feed() as a generator: each packet is handed out as soon as it is
        decoded, so a receiver can act on it while it is fresh in the cache.
        Run it to the end before feeding more; an error is raised by the
        iteration (after on_error is told), behind the packets before it.

        Packets are decoded by a plain unpacker, which costs nothing per
        packet, as long as the pending packet has no more than _quick bytes
        (so no more values than max_objects: each takes a byte). One that
        grows past that is decoded again from its start by an unpacker
        whose hooks count its values (_counted), which is used until
        nothing is pending; then a plain one takes over again."""
        if self._counting:
            yield from self._counted(data, on_error)
            return
        up = self._unpacker
        tell = up.tell
        quick = self._quick
        fed, boundary = self._fed, self._boundary
        pos, size = 0, len(data)
        try:
            while True:
                room = quick - (fed - boundary)
                if room <= 0:  # past what may be decoded uncounted
                    break
                if size - pos <= room:
                    chunk = data[pos:] if pos else data
                else:
                    chunk = data[pos : pos + room]
                start = fed
                pos += len(chunk)
                up.feed(chunk)
                fed += len(chunk)
                # tell() after each packet, not once after the loop: the loop
                # ends by consuming the start of the next, partial packet
                # (its headers and whole elements), so a single tell() there
                # would hide that packet from has_partial() and from the limit
                for packet in up:
                    if type(packet) is not list or (packet and type(packet[0]) is not str):
                        raise _bad_packet(packet)
                    boundary = tell()
                    yield packet
                if boundary != fed:  # keep the pending packet's bytes
                    if boundary > start:
                        self._held[:] = chunk[boundary - start :]
                    else:
                        self._held += chunk
                elif self._held:
                    self._held.clear()
                if pos >= size:
                    return
        except Exception as exc:
            error = self._error(exc, on_error)
            raise error from (None if error is exc else exc)
        finally:  # also when the consumer stops early: what it took is gone
            self._fed, self._boundary = fed, boundary
        if fed - boundary >= self._max:
            raise self._error(_too_long(self._max), on_error)
        # decode the pending packet again, counting, and go on so; what the
        # plain unpacker built of it goes first, not to be held twice
        del up, tell
        self._unpacker = self._make_unpacker(counting=True)
        self._counting = True
        self._count[0] = 0
        self._fed, self._boundary = 0, 0
        held, self._held = bytes(self._held), bytearray()
        yield from self._counted(held + data[pos:], on_error)

    def _counted(
        self, data: bytes, on_error: Callable[[RemoteProtocolError], None] | None
    ) -> Iterator[Packet]:
        """packets() with the counting unpacker."""
        up = self._unpacker
        tell = up.tell
        count = self._count
        fed, boundary = self._fed, self._boundary
        pos, size = 0, len(data)
        try:
            while True:
                room = self._max - (fed - boundary)
                if room <= 0:
                    raise _too_long(self._max)
                chunk = data[pos : pos + room] if size - pos > room else data[pos:]
                pos += len(chunk)
                up.feed(chunk)
                fed += len(chunk)
                for packet in up:
                    if type(packet) is not list or (packet and type(packet[0]) is not str):
                        raise _bad_packet(packet)
                    boundary = tell()
                    count[0] = 0
                    yield packet
                if boundary == fed:  # nothing pending: the plain unpacker again
                    self._unpacker = self._make_unpacker(counting=False)
                    self._counting = False
                    self._fed = self._boundary = 0
                    if pos < size:
                        yield from self.packets(data[pos:], on_error)
                    return
                if pos >= size:
                    return
        except Exception as exc:
            error = self._error(exc, on_error)
            raise error from (None if error is exc else exc)
        finally:
            if self._counting:
                self._fed, self._boundary = fed, boundary

    def _error(
        self, exc: Exception, on_error: Callable[[RemoteProtocolError], None] | None
    ) -> RemoteProtocolError:
        """The RemoteProtocolError for exc, which on_error is told of first."""
        if isinstance(exc, RemoteProtocolError):
            error = exc
        elif isinstance(exc, _TooMany):
            error = _too_many(self._max_objects)
        elif "max_ext_len" in str(exc):  # how msgpack refuses timestamps for us
            error = _refused_ext()
        elif "max_array_len" in str(exc) or "max_map_len" in str(exc):
            error = _too_many(self._max_objects)  # one header asked for too many
        else:
            error = RemoteProtocolError(f"invalid msgpack from the peer: {exc}")
        if getattr(exc, "told", False):  # raised through a nested packets()
            return error
        if on_error is not None or (on_error := self.on_error) is not None:
            on_error(error)
        error.told = True  # type: ignore[attr-defined]
        return error


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_WS = re.compile(r"[ \t\n\r]*")
_PLAIN = re.compile(r'[^"\[\]{}]*')  # outside strings: everything but quotes and brackets
_STR_BODY = re.compile(r'[^"\\]*')  # inside a string: everything but its end and escapes


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a whole JSON string, escapes and all


def _json_values(text: str, limit: int) -> int:
    """An upper bound of the values in the JSON text of one packet, as
    msgpack's decoder counts them: outside strings, a value for each comma
    and colon and one more for each list or dict that is not empty (each
    opening bracket, less those of "[]" and "{}"). Counted in strings too
    first, which is all it takes when that is within ``limit``."""
    count = text.count
    most = count(",") + count(":") + count("[") + count("{")  # "[]" in a str must not count
    if most <= limit:
        return most
    bare = _STRING.sub('""', text) if '"' in text else text
    count = bare.count
    return count(",") + count(":") + count("[") + count("{") - count("[]") - count("{}")


class JsonDecoder:
    """Incremental decoder for JSON arrays written back to back."""

    name = JSON

    def __init__(
        self, max_packet: int = DEFAULT_MAX_PACKET, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> None:
        self._max = max_packet
        self._max_objects = max_objects
        self.on_error: Callable[[RemoteProtocolError], None] | None = None  # as msgpack's
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

    def packets(
        self, data: bytes, on_error: Callable[[RemoteProtocolError], None] | None = None
    ) -> list[Packet]:
        """feed(), telling on_error of an error before raising it."""
        try:
            return self.feed(data)
        except RemoteProtocolError as exc:
            if on_error is not None or (on_error := self.on_error) is not None:
                on_error(exc)
            raise

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
            if size - pos > self._max_objects:  # it may hold more values than allowed
                end = self._scan(text, pos)
                if end < 0:  # incomplete: kept, and counted when complete
                    self._add_pending(text[pos:])
                    return out
                self._count_values(text[pos:end])
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

    def _count_values(self, text: str) -> None:
        limit = self._max_objects
        if len(text) > limit and _json_values(text, limit) > limit:
            raise _too_many(self._max_objects)

    def _decode_whole(self, text: str) -> Packet:
        self._count_values(text)
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
