# One remote node as this node sees it: its link, the packets waiting for
# the link, and the local monitors on its ports.
#
# States: IDLE (no link, nothing pending) -> CONNECTING (packets queue up)
# -> UP (packets go straight to the link) -> on loss FIRING -> IDLE.
# In FIRING the monitors on the lost node's ports are queued to fire on the
# run queue and new packets wait until they have fired: that is guarantee 2
# (no silent holes): nothing sent after a loss can arrive before every
# monitor that reports the loss has run. A new link that comes up while
# they wait (the peer dialled back at once) fires them on the spot, before
# any packet takes the new link.
#
# A packet queued while connecting is checked against the limits the
# encoder will apply (the node's max_packet and max_objects, in the
# stricter of the framings that may be negotiated): an over-limit message
# raises MessageError at snd, as on an open link, and never reaches the
# queue, where it would fail the link when it came up and take the packets
# queued with it down too.
#
# A Remote back in IDLE with nothing waiting (no packets, no monitors) is
# forgotten: the node drops it, and the route cache entries that point at
# it, so a node that served many short-lived peers (one-shot `aemp cal`
# clients, each with a fresh node ID) does not keep one per peer forever.
# Nothing here serves guarantee 4 (a port ID is never reused because each
# incarnation names its ports with a fresh random prefix), and guarantee 2
# is kept by forgetting only after every monitor of the loss has fired. A
# node that comes back gets a fresh Remote, as on first contact.

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import MessageError, Overloaded
from .._seam import Link
from ..wire import check_unsent

if TYPE_CHECKING:
    from ._handles import Monitor

log = logging.getLogger("aemp.remote")

MAX_PENDING = 100_000  # packets queued for a node that is not connected yet
MAX_IDLE_SUBSCRIPTIONS = 4096  # remote ports we keep monitoring with no local monitor


class RemoteOwner(Protocol):
    """What a Remote asks of its kernel (KernelState has it): declared here,
    so that this module imports no other part but the handles' types."""

    # the framings, max_packet and max_objects a queued packet must fit
    send_limits: tuple[tuple[str, ...], int, int]
    max_unsent: int  # bytes that may wait for the link (Overloaded past it)

    def post(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def _receive(self, remote: Remote, packets: Any, queued: bool = False) -> None: ...

    def _remote_lost(self, remote: Remote, why: str, was_up: bool, watched: set[str]) -> None: ...

    def _forget_remote(self, remote: Remote) -> None: ...


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    FIRING = "firing"


class Remote:
    __slots__ = (
        "_connect",
        "_firing",
        "id",
        "idle",
        "link",
        "monitors",
        "node",
        "packets_in",
        "pending",
        "pending_bytes",
        "receive",
        "state",
        "watched",
    )

    def __init__(self, node: RemoteOwner, nodeid: str, connect: Callable[[Remote], None]) -> None:
        self.node = node
        self.id = nodeid
        self._connect = connect
        # the node's Inbox (aemp/_seam.py): what the network reads from this node
        self.receive: Callable[[Any], None] = functools.partial(node._receive, self)
        self.packets_in = 0  # packets received from the node, counted by the kernel
        self.state = State.IDLE
        self.link: Link | None = None
        self.pending: list[list[Any]] = []
        self.pending_bytes = 0  # at most, in any framing: what pending takes on the wire
        # local monitors on this node's ports, by port name ("" = the node itself)
        self.monitors: dict[str, dict[Monitor, None]] = {}
        self.idle = 0  # names in monitors with an empty dict: subscribed, unused
        # names of our local ports this node asked to monitor (mon1)
        self.watched: set[str] = set()
        # in FIRING: the monitors of the lost link and the reason they get
        self._firing: tuple[dict[str, dict[Monitor, None]], tuple[Any, ...]] | None = None

    def __repr__(self) -> str:
        return f"<Remote {self.id!r} {self.state.value}>"

    def is_up(self) -> bool:
        """A method, not a property: callers ask again after every await."""
        return self.link is not None

    def send(self, packet: list[Any]) -> None:
        """Send or queue a packet of the node's own (a request, a reply)."""
        if self.link is not None:
            self.link.send(packet)
            return
        if len(self.pending) >= 2 * MAX_PENDING or self.pending_bytes > 2 * self.node.max_unsent:
            # snd stopped at half of this (offer): the node's own packets overran it
            self.lost(
                f"more than {2 * MAX_PENDING} packets or twice max_unsent "
                f"({self.node.max_unsent} bytes) queued while connecting"
            )
            return
        # raises MessageError, as a link would
        self.pending_bytes += check_unsent(packet, *self.node.send_limits)
        self.pending.append(packet)
        if self.state is State.IDLE:
            self.start_connect()

    def offer(self, packet: list[Any]) -> None:
        """send() for a message of snd or cal: Overloaded, with nothing queued,
        while more than max_unsent bytes or MAX_PENDING packets wait for the
        link to come up (the link itself refuses snd past max_unsent)."""
        if self.link is None and (
            len(self.pending) >= MAX_PENDING or self.pending_bytes > self.node.max_unsent
        ):
            raise Overloaded(
                f"snd to {self.id}#{packet[0]}: {len(self.pending)} packets "
                f"({self.pending_bytes} bytes at most) already wait for the connection, "
                f"more than {MAX_PENDING} packets or max_unsent ({self.node.max_unsent}); "
                f"nothing was sent: await drain({self.id!r}) and send again"
            )
        self.send(packet)

    def start_connect(self) -> None:
        if self.state is State.IDLE:
            self.state = State.CONNECTING
            self._connect(self)

    def up(self, link: Link) -> None:
        if self._firing is not None:
            self._fire_lost()
        self.state = State.UP
        self.link = link
        pending, self.pending = self.pending, []
        self.pending_bytes = 0
        for packet in pending:
            try:
                link.send(packet)
            except MessageError as e:
                # checked at snd time, but this framing (json) cannot carry it
                self.lost(f"a queued message cannot be sent in this framing: {e}")
                return

    def monitor(self, name: str, m: Monitor) -> None:
        mons = self.monitors.get(name)
        first = mons is None
        if mons is None:
            mons = self.monitors[name] = {}
        elif not mons and name:
            self.idle -= 1
        mons[m] = None
        if first:
            if name:
                self.send(["", "mon1", name])
            elif self.state is State.IDLE:
                self.start_connect()

    def unmonitor(self, name: str, m: Monitor) -> None:
        mons = self.monitors.get(name)
        if mons is None or m not in mons:
            return
        del mons[m]
        if mons or not name:
            if not mons:
                del self.monitors[name]
            return
        # The subscription (mon1) stays while there is room: the next monitor
        # on this port, typically the next cal to the same server, then costs
        # no packet at all. Past the limit, idle subscriptions are dropped.
        self.idle += 1
        if self.idle > MAX_IDLE_SUBSCRIPTIONS:
            for idle_name in [n for n, ms in self.monitors.items() if not ms and n]:
                del self.monitors[idle_name]
                if self.link is not None:
                    self.link.send(["", "mon0", idle_name])
            self.idle = 0

    def killed(self, name: str, reason: tuple[Any, ...]) -> None:
        """kil0 from the node: its port `name` died."""
        mons = self.monitors.pop(name, None)
        if mons:
            for m in mons:
                m._fire(reason)
        elif mons is not None:
            self.idle -= 1

    def lost(self, why: str) -> None:
        """The link failed, or could not be made: every monitor hears of it first."""
        if self.state is State.FIRING or self.state is State.IDLE:
            return
        link, self.link = self.link, None
        self.state = State.FIRING
        self.pending = []
        self.pending_bytes = 0
        watched, self.watched = self.watched, set()
        if link is not None:
            link.fail(why)  # nothing still queued on it may arrive after the monitors fired
        monitors, self.monitors = self.monitors, {}
        self.idle = 0
        self._firing = (monitors, ("transport_error", self.id, why))
        self.node._remote_lost(self, why, link is not None, watched)
        self.node.post(self._fired)

    def _fire_lost(self) -> None:
        firing, self._firing = self._firing, None
        if firing is not None:
            monitors, reason = firing
            for mons in monitors.values():
                for m in mons:
                    m._fire(reason)

    def _fired(self) -> None:
        """The run queue reached the loss: report it, then connect again if asked."""
        self._fire_lost()
        if self.state is State.FIRING:
            self.state = State.IDLE
            if self.pending or self.monitors:  # sent or monitored while firing
                self.start_connect()
            else:
                self.node._forget_remote(self)
