# Greeting lines: the two lines each side sends as soon as a connection
# exists, before it has read anything from the peer.
#
# Line 1 says who the sender is and what it speaks:
#     aemp;1;<nodeid>;<auth_accept,...>;<framing,...>;key=value;...
# line 2 is a random nonce (base64 of 66 bytes) that makes the auth tokens
# of every connection unique. Both end with LF. The raw bytes of each line
# are kept next to the parsed form, because the auth tokens hash the lines
# exactly as they travelled, whatever we make of them.

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._errors import RemoteProtocolError

PROTOCOL = "aemp"
PROTOCOL_VERSION = "1"
# The data connection (docs/protocol.md, "Data connections"): its dialler
# greets with this protocol name and the key dataconn_id, authenticates as
# a link does, and then the connection carries raw bytes. AnyEvent::MP
# names it so too; it is the only sub-protocol aemp speaks.
DATACONN = "aemp-dataconn"
SUBPROTOCOLS = frozenset({DATACONN})
# Perl buffers at most this much before authentication (rbuf_max); a line
# that does not fit is not a greeting but an attack or a wrong port.
MAX_LINE = 4096
NONCE_BYTES = 66
# What a heartbeat interval (the aemp key hb) may be: more often than every
# 50 ms would keep a peer busy with heartbeats, and a peer that asks for
# less than one a day is asking not to be watched at all. A node that wants
# more than that announces the maximum (it then only hears more often).
MIN_HEARTBEAT = 0.05
MAX_HEARTBEAT = 86400.0
# The aemp key that says how a node settles two connections that both
# authenticated (docs/protocol.md, "One connection per pair of nodes").
TIEBREAK = "nonce"

_OPTION = re.compile(r"([^=]+)(?:=(.*))?", re.DOTALL)
_PERL_INT = re.compile(rb"\s*([+-]?\d+)")
_DECIMAL = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Greeting:
    """The peer's greeting, parsed and checked (protocol aemp, version 1).

    ``options`` holds the ``key=value`` fields; a bare ``key`` maps to None.
    ``line1`` and ``nonce`` are the two lines as text, without terminators.
    """

    nodeid: str
    auth_accept: tuple[str, ...]
    framings: tuple[str, ...]
    options: dict[str, str | None] = field(hash=False)
    line1: str
    nonce: str
    protocol: str = PROTOCOL  # or DATACONN

    @property
    def dataconn_id(self) -> str | None:
        """The data connection this greeting opens (protocol aemp-dataconn),
        None for a node link. parse_greeting() has checked it is there."""
        return self.options.get("dataconn_id") if self.protocol == DATACONN else None

    @property
    def provider(self) -> str | None:
        return self.options.get("provider")

    @property
    def peeraddr(self) -> str | None:
        """Our address as the peer sees it."""
        return self.options.get("peeraddr")

    @property
    def tls(self) -> bool:
        """True if the peer offers TLS (``tls`` with Perl int() == 1)."""
        return perl_int(self.options.get("tls")) == 1

    @property
    def heartbeat(self) -> float | None:
        """The peer's ``hb`` interval in seconds; None if it sent none (a Perl
        node). parse_greeting() has checked the value."""
        value = self.options.get("hb")
        return None if value is None else float(value)

    @property
    def network(self) -> str | None:
        """The peer's network id (aemp's ``network`` key), None if it sent none
        (a Perl node, or an aemp node configured without one)."""
        return self.options.get("network")

    @property
    def tiebreak(self) -> bool:
        """True if the peer settles two authenticated connections by the
        nonce rule (``tiebreak=nonce``, aemp only)."""
        return self.options.get("tiebreak") == TIEBREAK


def networks_differ(own: str | None, greeting: Greeting) -> str | None:
    """Why a node of network `own` (None: none) must not go on with the peer
    that sent `greeting`, or None when both are of the same network.

    Networks are equal only when both name the same id, or neither names
    one: a node of a named network never merges with one of no network, or
    a Perl node (which cannot name one), and the other way round.
    """
    theirs = greeting.network
    if theirs == own:
        return None
    return (
        f"the peer {greeting.nodeid[:80]!r} is of network "
        f"{'(none)' if theirs is None else repr(theirs[:80])}, this node of "
        f"{'(none)' if own is None else repr(own)}: not connecting networks"
    )


def check_heartbeat(value: str | None) -> None:
    """Refuse an ``hb`` that is not a plain decimal number of seconds between
    MIN_HEARTBEAT and MAX_HEARTBEAT (inf, nan, negative, 1e300, ...)."""
    if value is None:
        return
    seconds = float(value) if _DECIMAL.fullmatch(value) else math.nan
    if not MIN_HEARTBEAT <= seconds <= MAX_HEARTBEAT:
        raise RemoteProtocolError(
            f"greeting key hb={value[:40]!r} is not a heartbeat interval: expected seconds "
            f"from {MIN_HEARTBEAT:g} to {MAX_HEARTBEAT:g}, as a decimal number"
        )


def perl_int(value: str | None) -> int:
    """Perl's int() of a string: the leading integer, 0 if there is none."""
    if value is None:
        return 0
    m = _PERL_INT.match(value.encode("utf-8", "replace"))
    return int(m.group(1)) if m else 0


def make_nonce() -> bytes:
    """Line 2: 88 base64 characters from the OS random source."""
    return base64.b64encode(os.urandom(NONCE_BYTES))


def make_line1(
    nodeid: str,
    auth_accept: Sequence[str],
    framings: Sequence[str],
    options: Iterable[tuple[str, str | None]],
    protocol: str = PROTOCOL,
) -> bytes:
    fields = [protocol, PROTOCOL_VERSION, nodeid, ",".join(auth_accept), ",".join(framings)]
    fields += [key if value is None else f"{key}={value}" for key, value in options]
    return ";".join(fields).encode("utf-8")


def take_line(buf: bytearray, what: str) -> bytes | None:
    """Remove one LF-terminated line from ``buf`` and return it without CR/LF.

    None means the line is not complete yet. A line longer than MAX_LINE is
    refused as soon as that many bytes are buffered without an LF, so a peer
    cannot make us hold more than that.
    """
    # room for MAX_LINE bytes of text, an optional CR and the LF
    end = buf.find(b"\n", 0, MAX_LINE + 2)
    if end < 0:
        if len(buf) > MAX_LINE + 1:
            raise RemoteProtocolError(
                f"{what} is longer than {MAX_LINE} bytes (no line end in the first "
                f"{len(buf)} bytes: {bytes(buf[:40])!r}...)"
            )
        return None
    line = bytes(buf[:end])
    del buf[: end + 1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_LINE:
        raise RemoteProtocolError(f"{what} is longer than {MAX_LINE} bytes ({len(line)} bytes)")
    return line


def check_line_start(buf: bytearray) -> None:
    """Refuse a stream that cannot become a greeting line 1, without waiting
    for a line end (a TLS ClientHello or an HTTP request, say)."""
    head = bytes(buf[: len(PROTOCOL)])
    if not PROTOCOL.encode().startswith(head):
        raise RemoteProtocolError(
            f"not an aemp greeting: the peer sent {bytes(buf[:40])!r}, "
            f"expected a line starting with 'aemp;1;'"
        )


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.split(",") if item)


def parse_line1(line1: bytes) -> tuple[str, list[str]]:
    """Check greeting line 1 and return it as text and as its fields."""
    try:
        text = line1.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"greeting line 1 is not valid UTF-8 ({exc.reason} at byte {exc.start}): {line1[:80]!r}"
        ) from exc
    fields = text.split(";")
    protocol = fields[0]
    if protocol != PROTOCOL and protocol not in SUBPROTOCOLS:
        if protocol.startswith(PROTOCOL + "-"):
            raise RemoteProtocolError(
                f"the peer asks for the sub-protocol {protocol!r}, which aemp does not "
                f"support (only {PROTOCOL!r} and {DATACONN!r})"
            )
        raise RemoteProtocolError(f"not an aemp greeting: {text[:80]!r}")
    if len(fields) < 5:
        raise RemoteProtocolError(
            f"greeting line 1 has {len(fields)} fields, expected at least 5 "
            f"(aemp;1;nodeid;auth;framing): {text[:200]!r}"
        )
    if fields[1] != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"version mismatch: the peer speaks aemp version {fields[1]!r}, "
            f"we speak version {PROTOCOL_VERSION}"
        )
    if not fields[2]:
        raise RemoteProtocolError(f"greeting line 1 has an empty node ID: {text[:200]!r}")
    return text, fields


def parse_greeting(line1: bytes, line2: bytes) -> Greeting:
    """Parse the peer's two greeting lines (without line terminators)."""
    text, fields = parse_line1(line1)
    try:
        nonce = line2.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"greeting line 2 is not valid UTF-8: {line2[:80]!r}") from exc
    options: dict[str, str | None] = {}
    for item in fields[5:]:
        m = _OPTION.match(item)
        if m:  # Perl skips what does not match, e.g. an empty field
            options[m.group(1)] = m.group(2)
    check_heartbeat(options.get("hb"))
    if fields[0] == DATACONN:
        check_dataconn_id(options.get("dataconn_id"))
    return Greeting(
        nodeid=fields[2],
        auth_accept=_split_list(fields[3]),
        framings=_split_list(fields[4]),
        options=options,
        line1=text,
        nonce=nonce,
        protocol=fields[0],
    )


MAX_DATACONN_ID = 200  # characters: a counter, '@' and a node ID


def check_dataconn_id(value: str | None) -> None:
    """Refuse a missing, empty or overlong dataconn_id (it names a data
    connection the peer asked for; anything else matches nothing anyway)."""
    if not value or len(value) > MAX_DATACONN_ID or not value.isprintable():
        shown = value if value is None else value[:40]
        raise RemoteProtocolError(
            f"greeting of protocol {DATACONN!r} has dataconn_id={shown!r}: expected "
            f"a printable id of 1 to {MAX_DATACONN_ID} characters"
        )
