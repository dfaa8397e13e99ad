# The kernel's state, declared once, and what its parts ask of each other.
#
# Kernel (aemp/kernel/_kernel.py) is composed of parts with one job each,
# one module per part: _ports.py (the port table), _dispatch.py (sending,
# the run queue and the dispatch), _context.py (port context, async
# callbacks, the callback-failure policy, tasks and timers), _monitors.py
# (kill and monitor), _links.py (other nodes and their links) and
# _requests.py (the node requests). Each part is a mixin of KernelState:
# the hot paths (snd, _drain, _receive, _deliver, cal's reply) read the
# port table, the run queue and the route cache straight off the node, so
# a part held as an object of its own would cost them a lookup per
# message. The state they share is declared here and nowhere else, with
# its types, and so are the methods one part calls on another (under
# TYPE_CHECKING: the definitions are the parts'), so mypy checks every
# part alone against this one declaration.
#
# May import the leaves, aemp/_seam.py, and of the kernel _port.py,
# _handles.py and _remote.py (the last two for their types only).

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgument, NodeClosed
from .._ids import counter_names, local_prefix, reply_prefix, secret_names, spawn_prefix
from .._seam import Connector
from ..wire import DEFAULT_FRAMINGS, DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PACKET
from ._port import NET, SYS, Port

if TYPE_CHECKING:
    from ._handles import Monitor, NodeWatch, Timer
    from ._remote import Remote

Callback = Callable[..., Any]
RequestHandler = Callable[..., None]


def die_reason(exc: BaseException) -> tuple[str, str]:
    """The kill reason for a port whose callback raised exc."""
    return ("die", f"{type(exc).__name__}: {exc}")


def check_callback(what: str, cb: object) -> Callback:
    """cb if it is callable, else InvalidArgument naming it."""
    if not callable(cb):
        raise InvalidArgument(
            f"{what} must be callable or None (got {cb!r}, a {type(cb).__name__})"
        )
    return cb


class KernelState:
    """The state every part of the kernel shares (see the module header)."""

    def __init__(self, nodeid: str, monitor_timeout: float, queue_limit: int = 10_000) -> None:
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "aemp.Node must be created inside a running event loop "
                "(for example in a coroutine run by aemp.run())"
            ) from None
        self.id: str = nodeid
        self.closed = False
        self._down = False  # close() has run
        self._monitor_timeout = monitor_timeout
        self._closers: list[Callable[[], None]] = []
        # ports (_ports.py): by ID, and the same ports by name, for packets
        self._ports: dict[str, Port] = {}
        self._by_name: dict[str, Port] = {}
        # the random prefixes of this incarnation's port names: local, spawn, reply
        self.prefixes = local_prefix(), spawn_prefix(), reply_prefix()
        self._prefix = self.id + "#"
        self._prefix_len = len(self._prefix)
        self._names = counter_names(f"{self.id}#{self.prefixes[0]}")
        self._reply_names = secret_names(f"{self.id}#{self.prefixes[2]}")  # cal's: unguessable
        # the run queue (_dispatch.py); msg: tuple, or list from the wire
        self._queue: deque[tuple[Port, Any]] = deque()
        self._drain_handle: asyncio.Handle | None = None
        self._sys = Port(self.id)  # runs post()ed calls from the queue
        self._sys.gate = SYS
        self._netq = Port(self.id)  # its entries: (remote, packets) read and not yet delivered
        self._netq.gate = NET
        # Flow control (_dispatch.py): what the node holds and has yet to
        # handle is the run queue's entries, the packets in its NET entries
        # and the busy ports' backlogs. Past queue_limit reading from every
        # link pauses (TCP pushes back on the senders); it resumes under half.
        self._queue_limit = queue_limit
        self._inbound = 0  # packets in the run queue's NET entries
        self._backlogged = 0  # messages in the backlogs of busy ports, and those held
        self._held = 0  # of them, messages code above the kernel keeps (hold())
        self._reading_paused = False  # some links are paused: self._paused
        self._paused: dict[Remote, None] = {}  # nodes whose links the node paused
        self._load_waiters: list[asyncio.Future[None]] = []  # drain() of this node
        self._routes: dict[str, tuple[Remote, str]] = {}  # remote port ID -> (node, name)
        # node-owned tasks and timers (_context.py)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: set[Timer] = set()
        # monitors of this node itself (_monitors.py)
        self._node_monitors: dict[Monitor, None] = {}
        # other nodes (_links.py)
        self._remotes: dict[str, Remote] = {}
        # node ID -> (loop time of the last failed attempt, wait after it), oldest first
        self._unreachable: dict[str, tuple[float, float]] = {}
        self._connect_waits: dict[str, Timer] = {}  # attempts waiting out their back-off
        self._connector: Connector | None = None
        self._node_watchers: dict[NodeWatch, None] = {}
        self._link_watchers: dict[Callable[[str, bool], None], None] = {}
        # the node requests (_requests.py): tag -> fn(remote, *args) (remote: None from here)
        self._requests: dict[str, RequestHandler] = {}
        # what a packet queued while connecting is checked against (_remote.py):
        # the framings we might send in, max_packet, max_objects (the node's config)
        self.send_limits: tuple[tuple[str, ...], int, int] = (
            DEFAULT_FRAMINGS,
            DEFAULT_MAX_PACKET,
            DEFAULT_MAX_OBJECTS,
        )
        self.max_unsent = 256 * 1024 * 1024  # bytes that may wait for a link (the config's)

    def check_open(self) -> None:
        """Raise NodeClosed if the node is closed."""
        if self.closed:
            raise NodeClosed(f"node {self.id!r} is closed")

    if TYPE_CHECKING:
        # What one part calls on another; each is defined by the part named.

        # _ports.py
        def _local_port(self, port: str, what: str) -> Port: ...

        # _dispatch.py
        def snd(self, port: str, *msg: Any) -> None: ...
        def send(self, port: str, msg: tuple[Any, ...]) -> None: ...
        def post(self, fn: Callable[..., Any], *args: Any) -> None: ...
        def _drain(self) -> None: ...
        def _receive(self, remote: Remote, packets: Any, queued: bool = False) -> None: ...
        def _deliver(self, p: Port, msg: tuple[Any, ...]) -> None: ...
        def _unload(self) -> None: ...

        # _context.py
        def _start_async(self, p: Port, awaitable: Any) -> None: ...
        def _resume(self, p: Port) -> None: ...
        def _die(self, p: Port, exc: Exception) -> None: ...
        def call_in(self, owner: str | None, fn: Callback, args: tuple[Any, ...]) -> Any: ...
        def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]: ...
        def timer(self, delay: float, fn: Callable[[], None]) -> Timer: ...

        # _monitors.py
        def kil(self, port: str, *reason: Any) -> None: ...
        def _kill(self, p: Port, reason: tuple[Any, ...]) -> None: ...
        def _unmonitor(self, m: Monitor) -> None: ...
        def dead_port_reason(self, name: str, nodeid: str) -> tuple[Any, ...] | None: ...

        # _links.py
        def _remote(self, nodeid: str) -> Remote: ...
        def _remote_lost(
            self, remote: Remote, why: str, was_up: bool, watched: set[str]
        ) -> None: ...
        def _forget_remote(self, remote: Remote) -> None: ...
        def up_nodes(self) -> list[str]: ...

        # _requests.py
        def handles(self, tag: object) -> bool: ...
        def _node_request(self, remote: Remote | None, msg: list[Any]) -> None: ...
