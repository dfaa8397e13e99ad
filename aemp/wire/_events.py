# What Connection.next_event() hands out: small frozen dataclasses, one per
# thing that happened, plus the NEED_DATA sentinel for "feed me more bytes".

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Literal

from ._greeting import Greeting


class Event:
    """Base class of the events next_event() returns."""

    __slots__ = ()


@dataclass(frozen=True)
class GreetingReceived(Event):
    """The peer's greeting arrived and is well-formed; it is not yet trusted.

    To refuse the peer (it is this node, or already connected), close the
    connection now: nothing of ours beyond our own greeting has been sent.
    """

    greeting: Greeting


@dataclass(frozen=True)
class Authenticated(Event):
    """The handshake is complete: packets may flow both ways.

    ``method`` is the auth method the peer proved itself with; ``send_framing``
    is what we send, ``recv_framing`` what the peer sends. ``remote_heartbeat``
    is the peer's ``hb`` interval, None if it sent none (a Perl node).
    """

    remote_nodeid: str
    greeting: Greeting
    method: str
    send_framing: str
    recv_framing: str
    tls: bool
    remote_heartbeat: float | None
    # the data connection this is (docs/protocol.md, "Data connections"):
    # from now on it carries raw bytes (Connection.stream_phase), not packets
    dataconn_id: str | None = None


@dataclass(frozen=True)
class Packets(Event):
    """Packets from the peer, in order; each is a list [portname, *message]."""

    packets: list[list[Any]]


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The peer ended the stream cleanly, between packets."""


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


NeedData = Literal[_Sentinel.NEED_DATA]
NEED_DATA: Final = _Sentinel.NEED_DATA
