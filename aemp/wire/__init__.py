# The aemp wire protocol as a sans-IO core: bytes in, events and bytes out
# (and the discovery datagram: encode_announcement, Verifier).
#
# Nothing here does I/O or knows about time: no asyncio, no socket (ssl is
# imported only when a connection switches to TLS, since ssl imports
# socket). The transport owns sockets, timers and batching; this package
# owns the rules: greeting, authentication, TLS switch, framing, limits.
#
#     conn = Connection(settings, peeraddr="10.0.0.2:4040")
#     conn.start()
#     write(conn.data_to_send())
#     ... conn.receive_data(chunk); event = conn.next_event() ...
#     once Authenticated: write(conn.wrap(b"".join(map(conn.encode, packets))))
#                         packets = conn.receive_packets(chunk)
#     or, one packet at a time: for packet in conn.receive_iter(chunk): ...
#     (data_phase() gives the two calls a transport needs, as short as can be)

from ._auth import (
    AUTH_METHODS,
    DEFAULT_AUTH,
    AuthLine,
    auth_token,
    choose_auth_method,
    parse_auth_line,
    verify_auth_line,
)
from ._connection import HANDSHAKE_STATES, Connection, State, StreamPhase
from ._decoding import DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PACKET, JsonDecoder, MsgpackDecoder
from ._discovery import REASONS as ANNOUNCEMENT_REFUSALS
from ._discovery import (
    Announcement,
    AnnouncementRefused,
    Verifier,
    announceable_address,
    discovery_key,
    encode_announcement,
    parse_announcement,
)
from ._events import (
    NEED_DATA,
    Authenticated,
    ConnectionClosed,
    Event,
    GreetingReceived,
    NeedData,
    Packets,
)
from ._framing import (
    DEFAULT_FRAMINGS,
    FRAMINGS,
    OUT_BYTES,
    OUT_PACKETS,
    Decoder,
    Encoder,
    JsonEncoder,
    MsgpackEncoder,
    check_unsent,
    choose_framing,
    make_decoder,
    make_encoder,
)
from ._greeting import (
    DATACONN,
    MAX_HEARTBEAT,
    MAX_LINE,
    MIN_HEARTBEAT,
    PROTOCOL_VERSION,
    Greeting,
    networks_differ,
    parse_greeting,
    take_line,
)
from ._settings import Settings

__all__ = [
    "ANNOUNCEMENT_REFUSALS",
    "AUTH_METHODS",
    "DATACONN",
    "DEFAULT_AUTH",
    "DEFAULT_FRAMINGS",
    "DEFAULT_MAX_OBJECTS",
    "DEFAULT_MAX_PACKET",
    "FRAMINGS",
    "HANDSHAKE_STATES",
    "MAX_HEARTBEAT",
    "MAX_LINE",
    "MIN_HEARTBEAT",
    "NEED_DATA",
    "OUT_BYTES",
    "OUT_PACKETS",
    "PROTOCOL_VERSION",
    "Announcement",
    "AnnouncementRefused",
    "AuthLine",
    "Authenticated",
    "Connection",
    "ConnectionClosed",
    "Decoder",
    "Encoder",
    "Event",
    "Greeting",
    "GreetingReceived",
    "JsonDecoder",
    "JsonEncoder",
    "MsgpackDecoder",
    "MsgpackEncoder",
    "NeedData",
    "Packets",
    "Settings",
    "State",
    "StreamPhase",
    "Verifier",
    "announceable_address",
    "auth_token",
    "check_unsent",
    "choose_auth_method",
    "choose_framing",
    "discovery_key",
    "encode_announcement",
    "make_decoder",
    "make_encoder",
    "networks_differ",
    "parse_announcement",
    "parse_auth_line",
    "parse_greeting",
    "take_line",
    "verify_auth_line",
]
