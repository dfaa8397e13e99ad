"""aemp.discovery: find the nodes of this network on a LAN, without seeds.

A node with the ``discovery`` key (``multicast:GROUP:PORT;options``)
joins each multicast group and announces itself there once at start and
then every ``interval`` seconds (jittered by up to a tenth, so that nodes
started together do not stay in step): its node ID, its network id, its
listener addresses and the time, signed with a key derived from the
network's secret (aemp.wire's announcement, docs/protocol.md section 18).
What it hears it checks with a wire.Verifier; a node of its network that
it did not know becomes a seed (aemp.lowlevel.add_seed), so it connects
to it, and reconnects after a loss, as to a configured seed. The
datagram is only a hint: the TCP handshake still authenticates the node.

What is refused is counted by reason (statistics()) and logged once per
reason and minute, never per datagram: another network's nodes, a wrong
secret, a forgery, a stale or replayed datagram, or more datagrams than
FLOOD_RATE a second (the excess is dropped before any check). At most
MAX_PEERS peers are kept. A peer unheard for EXPIRE_INTERVALS intervals
is forgotten and its seed addresses removed (a link that is up stays), so
the seeds of nodes that left do not pile up; it is learnt again when it
comes back.

Of the addresses a peer lists, those on the host the datagram came from
are taken (a peer's loopback address would lead back to this very host),
else the ones that are not loopback, at most MAX_SEEDS_PER_PEER.

configure() (and so ``aemp run``) starts discovery before the configured
services; a Node made directly starts it with ``await start(node)``.
Timers run on the loop's clock; the announcements' times are the wall
clock (milliseconds since 1970), which the hosts of a LAN share.

A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aemp
from aemp import lowlevel, wire
from aemp._addr import parse_address
from aemp._config import DiscoverySpec, parse_discovery
from aemp._errors import ConfigError
from aemp._runtime import CURRENT

__all__ = ["Discovery", "of", "start", "statistics"]

log = logging.getLogger("aemp.discovery")

_EXTENSION = "aemp.discovery"
# Datagrams checked per second, over all channels, and the burst allowed
# above that: a LAN of a thousand nodes announcing every 5 s sends 200 a
# second; more is a flood, dropped before the HMAC is computed.
FLOOD_RATE = 200.0
FLOOD_BURST = 400.0
MAX_PEERS = 1024  # peers kept: each holds seed connections
MAX_SEEDS_PER_PEER = 4
EXPIRE_INTERVALS = 3  # a peer unheard this many intervals is forgotten
LOG_EVERY = 60.0  # seconds between two log lines of one refusal reason
COUNTERS = ("sent", "send_errors", "received", "accepted", "own", "flood", "peers_full")


@dataclass
class Peer:
    """A node heard on a channel: the seed addresses added for it, and when."""

    seeds: list[str]
    heard: float  # loop time
    first: float


@dataclass
class _Channel:
    spec: DiscoverySpec
    transport: asyncio.DatagramTransport | None = None
    target: tuple[str, int] = ("", 0)
    errors_logged: bool = False


@dataclass
class _Bucket:
    """The flood limit: a token bucket on the loop's clock."""

    loop: asyncio.AbstractEventLoop
    tokens: float = FLOOD_BURST
    last: float = field(default=0.0)

    def take(self) -> bool:
        now = self.loop.time()
        self.tokens = min(FLOOD_BURST, self.tokens + (now - self.last) * FLOOD_RATE)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Discovery:
    """One node's discovery: its channels, the peers it heard, its counters.

    Made and started by start(); closed with the node.
    """

    def __init__(self, node: aemp.Node) -> None:
        cfg = node.config
        if not cfg.discovery:
            raise ConfigError(f"node {node.id!r} has no 'discovery' key: nothing to start")
        if cfg.secret is None:
            raise ConfigError(
                f"node {node.id!r}: 'discovery' needs a shared 'secret' to sign its "
                "announcements (certificate-only networks cannot use discovery yet)"
            )
        self.node = node
        self.channels = [_Channel(parse_discovery(spec)) for spec in cfg.discovery]
        self.interval = min(c.spec.interval for c in self.channels)
        window = max(c.spec.window for c in self.channels)
        self._key = wire.discovery_key(cfg.secret.encode("utf-8"), cfg.network)
        self._verifier = wire.Verifier(self._key, cfg.network, int(window * 1000))
        self.peers: dict[str, Peer] = {}
        self.counts: dict[str, int] = dict.fromkeys((*COUNTERS, *wire.ANNOUNCEMENT_REFUSALS), 0)
        self._logged: dict[str, float] = {}
        self._bucket = _Bucket(node.loop)
        self._last_ms = 0  # the time of the last announcement sent
        self._tasks: list[asyncio.Future[Any]] = []
        self.closed = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        node = self.node
        if not node.listeners:
            log.warning("node %s: discovery without binds: it announces nothing others "
                        "could dial, and only finds nodes", node.id)  # fmt: skip
        lowlevel.on_close(node, self.close)
        for channel in self.channels:
            await self._open(channel)
        for channel in self.channels:
            self._tasks.append(lowlevel.spawn_task(node, self._announce_loop(channel)))
        self._tasks.append(lowlevel.spawn_task(node, self._expire_loop()))
        log.info("node %s: discovery on %s", node.id, ", ".join(node.config.discovery))

    async def _open(self, channel: _Channel) -> None:
        spec = channel.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):  # several nodes of a host on one group
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((spec.group, spec.port))  # only this group's datagrams to the port
            iface = _interface(spec.interface)
            group = socket.inet_aton(spec.group)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, spec.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"node {self.node.id!r}: cannot join the discovery channel "
                f"{spec.group}:{spec.port}"
                f"{'' if spec.interface is None else ' on ' + spec.interface}: "
                f"{e.strerror or e}"
            ) from e
        transport, _ = await self.node.loop.create_datagram_endpoint(
            lambda: _Receiver(self), sock=sock
        )
        channel.transport = transport
        channel.target = (spec.group, spec.port)

    def close(self) -> None:
        """Leave every channel (the node's close cancels the tasks)."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for channel in self.channels:
            if channel.transport is not None:
                channel.transport.close()
                channel.transport = None

    # ---------------------------------------------------------------- sending

    async def _announce_loop(self, channel: _Channel) -> None:
        while not self.closed:
            self._announce(channel)
            await asyncio.sleep(channel.spec.interval * random.uniform(0.9, 1.1))

    def _announce(self, channel: _Channel) -> None:
        """Send one announcement on `channel` now (if the node listens)."""
        node = self.node
        if channel.transport is None or not node.listeners:
            return
        # each announcement newer than the last, also on several channels in
        # one millisecond: a peer on two of them takes both
        self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        data = wire.encode_announcement(
            self._key,
            node.id,
            node.config.network,
            [a for a in node.listeners if wire.announceable_address(a)],
            self._last_ms,
            secrets.token_hex(8),
        )
        try:
            channel.transport.sendto(data, channel.target)
        except OSError as e:  # pragma: no cover - uvloop reports through error_received
            self._send_failed(channel, e)
            return
        self.counts["sent"] += 1

    def _send_failed(self, channel: _Channel, exc: Exception) -> None:
        self.counts["send_errors"] += 1
        if not channel.errors_logged:
            channel.errors_logged = True
            log.warning("node %s: discovery cannot send to %s:%d: %s (counted from now on)",
                        self.node.id, *channel.target, exc)  # fmt: skip

    # ---------------------------------------------------------------- receiving

    def received(self, data: bytes, source: str) -> None:
        """Check one datagram from the IPv4 address `source`, as a channel
        hands it over, and act on it."""
        if self.closed or self.node.closed:
            return
        self.counts["received"] += 1
        if not self._bucket.take():
            self._refused("flood", f"more than {FLOOD_RATE:g} datagrams a second")
            return
        try:
            ann = self._verifier.check(data, time.time_ns() // 1_000_000, self.node.id)
        except wire.AnnouncementRefused as e:
            self._refused(e.reason, f"{e} (from {source})")
            return
        if ann.nodeid == self.node.id:
            self.counts["own"] += 1  # our own, looped back
            return
        self.counts["accepted"] += 1
        self._heard(ann, source)

    def _heard(self, ann: wire.Announcement, source: str) -> None:
        now = self.node.loop.time()
        peer = self.peers.get(ann.nodeid)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                self._refused("peers_full", f"{MAX_PEERS} peers known already")
                return
            peer = self.peers[ann.nodeid] = Peer([], now, now)
            log.info("node %s: discovered %s at %s", self.node.id, ann.nodeid,
                     ", ".join(ann.addresses) or "no address")  # fmt: skip
        peer.heard = now
        wanted = _choose(ann.addresses, source)
        for addr in peer.seeds:
            if addr not in wanted:  # it moved (a restart on another port)
                lowlevel.remove_seed(self.node, addr)
        # an address that is a seed already (configured, or another peer's)
        # is not ours to remove later
        peer.seeds = [
            addr for addr in wanted if addr in peer.seeds or lowlevel.add_seed(self.node, addr)
        ]

    def _refused(self, reason: str, why: str) -> None:
        self.counts[reason] += 1
        now = self.node.loop.time()
        last = self._logged.get(reason)
        if last is None or now - last >= LOG_EVERY:
            self._logged[reason] = now
            log.warning("node %s: discovery ignored a datagram (%s): %s; such are counted, "
                        "logged once a minute", self.node.id, reason, why)  # fmt: skip

    async def _expire_loop(self) -> None:
        limit = EXPIRE_INTERVALS * max(c.spec.interval for c in self.channels)
        while not self.closed:
            await asyncio.sleep(self.interval)
            now = self.node.loop.time()
            for nodeid, peer in list(self.peers.items()):
                if now - peer.heard > limit:
                    del self.peers[nodeid]
                    for addr in peer.seeds:
                        lowlevel.remove_seed(self.node, addr)
                    log.info("node %s: %s not heard for %g s: forgotten until it is heard again",
                             self.node.id, nodeid, limit)  # fmt: skip

    # ---------------------------------------------------------------- statistics

    def statistics(self) -> dict[str, Any]:
        now = self.node.loop.time()
        return {
            **self.counts,
            "channels": list(self.node.config.discovery),
            "peers": {
                nodeid: {
                    "seeds": list(p.seeds),
                    "heard": round(now - p.heard, 3),
                    "known": round(now - p.first, 3),
                }
                for nodeid, p in self.peers.items()
            },
        }


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.discovery.received(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        for channel in self.discovery.channels:
            if channel.transport is not None:
                self.discovery._send_failed(channel, exc)
                return


def _interface(name: str | None) -> bytes:
    """The 4 bytes IP_ADD_MEMBERSHIP and IP_MULTICAST_IF take for an interface
    given by IPv4 address or by name (the address it holds)."""
    if name is None:
        return socket.inet_aton("0.0.0.0")
    try:
        return socket.inet_aton(str(ipaddress.IPv4Address(name)))
    except ValueError:
        pass
    import fcntl

    siocgifaddr = 0x8915  # Linux: the interface's IPv4 address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = struct.pack("256s", name.encode()[:15])
            return fcntl.ioctl(s.fileno(), siocgifaddr, req)[20:24]
        except OSError as e:
            raise ConfigError(
                f"discovery interface {name!r}: no such interface with an IPv4 address "
                f"({e.strerror or e})"
            ) from e


def _choose(addresses: tuple[str, ...], source: str) -> list[str]:
    """The addresses to dial a peer at: those on the host the datagram came
    from, else the ones that are not loopback."""
    usable = []
    for addr in addresses:
        try:
            host, _ = parse_address(addr)
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except (ConfigError, ValueError):
            continue
        usable.append((addr, str(ip), ip.is_loopback))
    same = [a for a, ip, _ in usable if ip == source]
    chosen = same or [a for a, _, loop in usable if not loop]
    return chosen[:MAX_SEEDS_PER_PEER]


# ---------------------------------------------------------------- the API


def of(node: aemp.Node) -> Discovery | None:
    """The node's Discovery, None if it was not started."""
    found = node.extension(_EXTENSION + ".started", lambda: [None])
    return found[0]  # type: ignore[no-any-return]


async def start(node: aemp.Node | None = None) -> Discovery:
    """Start discovery on `node` (default: the current node) as its
    ``discovery`` key says; the one already running if it was started.

    ConfigError if the node has no ``discovery`` key, no ``secret``, no
    network, or a channel cannot be joined (the message says which).
    """
    if node is None:
        node = CURRENT.get()
        if node is None:
            raise aemp.NoCurrentNode(
                "discovery.start() needs a node: pass it, or run it as a service "
                "(configure() does, for the 'discovery' key)"
            )
    holder = node.extension(_EXTENSION + ".started", lambda: [None])
    if holder[0] is not None:
        return holder[0]  # type: ignore[no-any-return]
    if node.network is None:
        raise ConfigError(
            f"discovery: node {node.id!r} has no network: give it a 'secret' and 'binds', "
            "and start() it first"
        )
    disc = Discovery(node)
    holder[0] = disc
    try:
        await disc.start()
    except BaseException:
        holder[0] = None
        disc.close()
        raise
    return disc


def statistics(node: aemp.Node) -> dict[str, Any]:
    """What discovery did on `node`: datagrams sent, received, accepted;
    refused by reason (malformed, network, forged, stale, replayed, flood,
    peers_full), own ones heard back, send errors; the channels; and the
    peers {node ID: {"seeds", "heard" (seconds ago), "known" (seconds
    since first heard)}}. ConfigError if discovery was not started."""
    disc = of(node)
    if disc is None:
        raise ConfigError(f"discovery was not started on node {node.id!r}")
    return disc.statistics()
