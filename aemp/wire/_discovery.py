# Discovery announcements: the one-datagram message a node sends to a
# multicast group to say "I am here, of this network, listening there"
# (docs/protocol.md, section 18), and the checks a receiver makes before it
# believes one. Sans-IO like the rest of wire/: bytes in, an Announcement
# or an AnnouncementRefused out; the caller owns the socket and the clock.
#
#     aemp-discovery;1;<network>;<node ID>;<ms>;<nonce>;<addr,...>;<tag>
#
# The tag is HMAC-SHA3-256 over every byte before it (the last ';'
# included), keyed with discovery_key(secret, network): anyone may read an
# announcement (it holds nothing secret), but only a holder of the
# network's secret can make one that passes, and one network's key says
# nothing about another's. A datagram is only a hint: the node it names
# must still authenticate in the TCP handshake before anything is sent.
#
# The Verifier keeps, per node ID, the newest time it accepted (bounded),
# so that a datagram replayed from a capture is refused: its time is not
# newer. Times are the sender's wall clock in milliseconds; a datagram
# further than `window` from the receiver's clock is refused as stale, so a
# capture is worthless after that even to a receiver that never saw it.
#
# May import only the standard library and aemp._errors.

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import RemoteProtocolError

MAGIC = "aemp-discovery"
VERSION = "1"
# One datagram, unfragmented on any link (IPv6's minimum MTU is 1280 bytes,
# less 48 for the IPv6 and UDP headers): bigger ones are refused unread.
MAX_DATAGRAM = 1200
MAX_ADDRESSES = 16  # listener addresses one announcement may carry
MAX_FIELD = 200  # a node ID, a network id or an address: more is no announcement
TAG_HEX = 64  # HMAC-SHA3-256, in lowercase hex
NONCE_HEX = 16
# node IDs whose newest accepted time a Verifier keeps: a LAN holds far
# fewer nodes, and an entry can only be made with the network's key
MAX_KNOWN = 4096

_FIELDS = 8
_DIGITS = re.compile(r"[0-9]{1,15}\Z")  # ms since 1970: 13 digits until the year 2286
_HEX = re.compile(r"[0-9a-f]+\Z")
# what a node ID may be (docs/protocol.md, section 2): printable, no ';' '#', no space
_ID = re.compile(r"[^\s;#,]+\Z")
_NETWORK = re.compile(r"[A-Za-z0-9_.:/-]{1,64}\Z")
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.%A-Za-z0-9_-]+\]|[A-Za-z0-9_.%-]+):([0-9]{1,5})\Z")

# why an announcement is refused: the counters a receiver keeps
MALFORMED = "malformed"  # not an announcement of this version
NETWORK = "network"  # of another network (or of none, or of one when we have none)
FORGED = "forged"  # the tag does not match: a wrong secret, or made up
STALE = "stale"  # its time is too far from ours
REPLAYED = "replayed"  # not newer than one accepted before from the same node ID
REASONS = (MALFORMED, NETWORK, FORGED, STALE, REPLAYED)


class AnnouncementRefused(RemoteProtocolError):
    """A datagram that is not a good announcement; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Announcement:
    """A node's announcement: who, of which network, where it listens, when."""

    nodeid: str
    network: str | None
    addresses: tuple[str, ...]
    time_ms: int
    nonce: str


def discovery_key(secret: bytes, network: str | None) -> bytes:
    """The key announcements of `network` (None: none) are signed with."""
    label = b"aemp discovery key;" + (network or "").encode("ascii")
    return hmac.new(secret, label, hashlib.sha3_256).digest()


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha3_256).hexdigest().encode("ascii")


def announceable_address(addr: str) -> bool:
    """True if `addr` is "host:port" (IPv6 hosts in brackets) with a port from 1 to 65535."""
    if len(addr) > MAX_FIELD:
        return False
    m = _ADDRESS.match(addr)
    return m is not None and 1 <= int(m.group(2)) <= 65535


def encode_announcement(
    key: bytes,
    nodeid: str,
    network: str | None,
    addresses: Sequence[str],
    time_ms: int,
    nonce: str,
) -> bytes:
    """The datagram announcing `nodeid`; ValueError if a field cannot travel."""
    if not _ID.match(nodeid) or len(nodeid) > MAX_FIELD or not nodeid.isprintable():
        raise ValueError(f"node ID {nodeid[:80]!r} cannot be announced")
    if network is not None and not _NETWORK.match(network):
        raise ValueError(f"network id {network[:80]!r} cannot be announced")
    addrs = list(addresses)[:MAX_ADDRESSES]
    for addr in addrs:
        if not announceable_address(addr):
            raise ValueError(f"address {addr[:80]!r} cannot be announced")
    if not 0 <= time_ms < 10**15:
        raise ValueError(f"time {time_ms!r} ms cannot be announced")
    if len(nonce) != NONCE_HEX or not _HEX.match(nonce):
        raise ValueError(f"nonce {nonce!r} is not {NONCE_HEX} lowercase hex digits")
    fields = [MAGIC, VERSION, network or "", nodeid, str(time_ms), nonce, ",".join(addrs), ""]
    body = ";".join(fields).encode("utf-8")
    data = body + _tag(key, body)
    while len(data) > MAX_DATAGRAM and addrs:  # the first addresses are the best ones
        addrs.pop()
        fields[6] = ",".join(addrs)
        body = ";".join(fields).encode("utf-8")
        data = body + _tag(key, body)
    # without addresses it fits: every other field is bounded (MAX_FIELD)
    return data


def _malformed(why: str, data: bytes) -> AnnouncementRefused:
    return AnnouncementRefused(MALFORMED, f"not an aemp announcement: {why} ({data[:60]!r})")


def parse_announcement(data: bytes) -> tuple[Announcement, bytes, bytes]:
    """The announcement in `data`, the bytes its tag covers and the tag, unchecked.

    Raises AnnouncementRefused (reason MALFORMED), nothing else.
    """
    if len(data) > MAX_DATAGRAM:
        raise _malformed(f"{len(data)} bytes, more than {MAX_DATAGRAM}", data)
    if not data.startswith(MAGIC.encode() + b";"):
        raise _malformed("it does not start with 'aemp-discovery;'", data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"not UTF-8 ({exc.reason} at byte {exc.start})", data) from None
    fields = text.split(";")
    if len(fields) != _FIELDS:
        raise _malformed(f"{len(fields)} fields, expected {_FIELDS}", data)
    _, version, network, nodeid, ms, nonce, addrs, tag = fields
    if version != VERSION:
        raise _malformed(f"version {version[:20]!r}, expected {VERSION}", data)
    if network and not _NETWORK.match(network):
        raise _malformed(f"network id {network[:40]!r} is not valid", data)
    if not _ID.match(nodeid) or len(nodeid) > MAX_FIELD or not nodeid.isprintable():
        raise _malformed(f"node ID {nodeid[:40]!r} is not valid", data)
    if not _DIGITS.match(ms):
        raise _malformed(f"time {ms[:20]!r} is not a number of milliseconds", data)
    if len(nonce) != NONCE_HEX or not _HEX.match(nonce):
        raise _malformed(f"nonce {nonce[:20]!r} is not {NONCE_HEX} hex digits", data)
    addresses = tuple(addrs.split(",")) if addrs else ()
    if len(addresses) > MAX_ADDRESSES:
        raise _malformed(f"{len(addresses)} addresses, at most {MAX_ADDRESSES}", data)
    for addr in addresses:
        if not announceable_address(addr):
            raise _malformed(f"address {addr[:40]!r} is not host:port", data)
    if len(tag) != TAG_HEX or not _HEX.match(tag):
        raise _malformed(f"tag is not {TAG_HEX} lowercase hex digits", data)
    ann = Announcement(nodeid, network or None, addresses, int(ms), nonce)
    return ann, data[: len(data) - TAG_HEX], tag.encode("ascii")


class Verifier:
    """Checks announcements for one network with one key, and refuses replays.

    ``window_ms`` is how far an announcement's time may lie from the
    receiver's clock (``now_ms`` of check()).
    """

    def __init__(self, key: bytes, network: str | None, window_ms: int) -> None:
        self._key = key
        self._network = network
        self._window = window_ms
        self._newest: dict[str, int] = {}  # node ID -> newest time accepted, oldest first

    def check(self, data: bytes, now_ms: int, own: str | None = None) -> Announcement:
        """The announcement in `data` if it is good, new and of our network.

        Raises AnnouncementRefused (a RemoteProtocolError) with its reason,
        nothing else. The checks go from cheap to dear: form, network, tag,
        time, replay. An announcement of the node `own` (the receiver's own,
        looped back, perhaps from several channels) skips the replay check
        and is not remembered.
        """
        ann, body, tag = parse_announcement(data)
        if ann.network != self._network:
            raise AnnouncementRefused(
                NETWORK,
                f"announcement of {ann.nodeid[:80]!r} is of network "
                f"{ann.network or '(none)'!r}, not {self._network or '(none)'!r}",
            )
        if not hmac.compare_digest(tag, _tag(self._key, body)):
            raise AnnouncementRefused(
                FORGED, f"announcement of {ann.nodeid[:80]!r} has a wrong tag (another secret?)"
            )
        if abs(ann.time_ms - now_ms) > self._window:
            raise AnnouncementRefused(
                STALE,
                f"announcement of {ann.nodeid[:80]!r} is {(now_ms - ann.time_ms) / 1000:.1f} s "
                f"off this host's clock (at most {self._window / 1000:g} s)",
            )
        if ann.nodeid == own:
            return ann
        newest = self._newest.pop(ann.nodeid, None)
        if newest is not None and ann.time_ms <= newest:
            self._newest[ann.nodeid] = newest
            raise AnnouncementRefused(
                REPLAYED, f"announcement of {ann.nodeid[:80]!r} is not newer than one before"
            )
        self._newest[ann.nodeid] = ann.time_ms  # now the most recent entry
        if len(self._newest) > MAX_KNOWN:
            self._forget(now_ms)
        return ann

    def _forget(self, now_ms: int) -> None:
        # entries beyond the window guard nothing (check refuses those times
        # as stale); if all are recent, the least recently heard goes
        for nodeid, ms in list(self._newest.items()):
            if now_ms - ms > self._window:
                del self._newest[nodeid]
        while len(self._newest) > MAX_KNOWN:
            del self._newest[next(iter(self._newest))]

    def __len__(self) -> int:
        return len(self._newest)
