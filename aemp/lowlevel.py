"""aemp.lowlevel: the interface for code that extends aemp.

Worker pools, supervisors, leases, discovery, control sockets: code that
builds new capabilities on a node uses these functions and the public API,
never a Node's private names. Each function (but current_node) takes the
node first. They are small on purpose and keep the node's guarantees: what
runs from the run queue runs in FIFO order with the messages, what runs for
a port runs in its context (SELF) and kills it when it raises.

Documented in docs/lowlevel.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._addr import parse_address
from ._errors import InvalidArgument, NodeClosed, NotLocalPort, OutOfRange
from ._ids import check_port_id
from ._seam import DataStream as DataStream
from ._targets import parse_spawn_target
from .kernel import Handle, Timer, check_callback
from .kernel import Port as ReplyPort

if TYPE_CHECKING:
    import asyncio

    from ._node import Node

# DataStream (the type of a data connection's stream) and ReplyPort (what
# reply_ports' send returns) are importable from here too, and documented
# on the page, but they are types, not functions.
__all__ = [
    "add_seed",
    "call_in",
    "current_node",
    "dial_data_connection",
    "database",
    "expect_data_connection",
    "extension",
    "gated_port",
    "global_nodes",
    "handle",
    "handle_global",
    "hold",
    "node_info",
    "on_close",
    "port_alive",
    "port_info",
    "port_task",
    "ports",
    "post",
    "release",
    "remove_seed",
    "reply_ports",
    "request",
    "seeds",
    "spawn_linked",
    "spawn_function",
    "spawn_task",
    "stream_pair",
    "statistics",
    "status",
    "timer",
    "watch_links",
]


def current_node() -> Node:
    """The node the module-level functions act on now: the node whose port
    callback runs, else the process's configured node, else an anonymous
    node made for the running event loop (NoCurrentNode outside a loop)."""
    from ._current import current_node as current

    return current()


def post(node: Node, fn: Callable[..., Any], *args: Any) -> None:
    """Run fn(*args) from the node's run queue, in FIFO order with the messages
    sent before it, outside any port (SELF is None). An exception is logged."""
    node.post(node.call_in, None, check_callback("post function", fn), args)


def call_in(node: Node, port: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) now in the context of `port` (SELF), or of no port (None).

    An exception kills the port (or is logged without one) and call_in
    returns None; an awaitable result runs as a task the node owns, whose
    failure kills the port too. A port that is dead or of another node
    counts as no port.
    """
    return node.call_in(port, check_callback("call_in function", fn), args)


def spawn_task(node: Node, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """Run a coroutine as a task the node owns: close() cancels and awaits it."""
    return node.spawn_task(coro)


def spawn_linked(node: Node, nodeid: str, link: str, target: str, *args: Any) -> str:
    """spawn(nodeid, target, *args), and the new port dies when `link` dies.

    The node that runs the new port monitors `link` (a port or node ID)
    before the function runs: when `link` dies, the new port dies with the
    same reason, a normal exit too; when the node of `link` is lost, with
    its ("transport_error", ...). A child cannot outlive its supervisor
    this way, not even when the supervisor's node is killed. Returns the
    new port ID at once. Raises as spawn() does, and InvalidID for `link`.
    """
    return node.spawn_linked(nodeid, link, target, *args)


def timer(node: Node, seconds: float, fn: Callable[..., Any], *args: Any) -> Timer:
    """Call fn(*args) after `seconds` on the loop's clock, outside any port.

    Returns the Timer; cancel() stops it, and so does closing the node. An
    exception from fn is logged. (Node.after is the port-aware form.)
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(f"timer: seconds must be a number >= 0 (got {seconds!r})")
    if not seconds >= 0 or math.isinf(seconds):
        raise OutOfRange(f"timer: seconds must be a finite number >= 0 (got {seconds!r})")
    check_callback("timer function", fn)
    return node.timer(float(seconds), lambda: node.call_in(None, fn, args))


def on_close(node: Node, fn: Callable[[], Any]) -> None:
    """Call fn() when the node closes: after its network and timers stopped,
    before its ports die and its tasks are cancelled. An exception is logged."""
    node.on_close(check_callback("on_close function", fn))


def extension(node: Node, name: str, make: Callable[[], Any]) -> Any:
    """The node's object for the extension `name` (by convention its module's
    name), made by make() on the first call and returned by every later one.

    This is where a capability built on aemp keeps what belongs to one
    node (a thread pool, a table of leases), instead of module-level state.
    make() that needs to clean up registers with on_close itself. Raises
    NodeClosed when the object does not exist yet and the node is closed.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"extension: name must be a non-empty str (got {name!r})")
    return node.extension(name, check_callback("extension make", make))


def hold(node: Node, n: int) -> None:
    """Count n more messages (n < 0: fewer) that an extension keeps for the
    node's ports against the node's queue_limit, as a busy port's backlog
    counts: past queue_limit every link pauses reading, under half of it
    reading resumes. Give back what you counted when you let it go."""
    if type(n) is not int:
        raise InvalidArgument(f"hold: n must be an int (got {n!r})")
    node.hold(n)


# ---------------------------------------------------------------- requests


def handle(node: Node, tag: str, fn: Callable[..., Any]) -> None:
    """Answer the node request `tag`: fn(sender, *args) for each request
    [tag, *args] sent to this node's node port.

    `sender` is the node ID of the link the request came in on, or None
    when this node's own code sent it to its own node port (most likely a
    relay a peer built: give it no more authority than a peer). fn runs
    outside any port; a TypeError or ValueError it raises is logged as a
    malformed request, anything else as an error with its traceback.
    `can` answers True for the tag from now on. AlreadyHandled (a
    ValueError) if the tag is handled already (the core requests included).
    """
    node.handle(tag, check_callback("handle function", fn))


def reply_ports(
    node: Node,
) -> tuple[
    Callable[[str, tuple[Any, ...], Callable[..., Any]], ReplyPort], Callable[[ReplyPort], None]
]:
    """cal's first half, for code that keeps its own deadlines and monitors:
    ``send, drop = reply_ports(node)``.

    ``send(port, msg, cb)`` makes a reply port with an unguessable ID,
    sends ``(*msg, its ID)`` to `port` and returns it (``.id`` is the ID);
    a message to it calls ``cb(*message)`` with SELF set to that ID.
    ``drop(reply)`` ends it: messages after that are dropped. Nothing is
    checked: `port` passed check_port_id, `msg` is a tuple (its values are
    checked as it is sent: MessageError, and no reply port is left), `cb`
    is callable, and the node is open (close the user from on_close). A
    reply port dies with the node; drop() of a dead one does nothing.
    NodeClosed if the node is closed now.
    """
    node.check_open()
    return node.call_out, node.drop_port


def request(node: Node, nodeid: str, tag: str, *args: Any) -> None:
    """Send the node request [tag, *args] to the node `nodeid` (this one too).

    Like snd to the node port: it returns at once, connects if needed, and
    nothing says whether the other node handles the tag (ask with the
    `can` request, or make the handler answer to a port).
    """
    node.request(nodeid, tag, *args)


def handle_global(node: Node, tag: str, fn: Callable[..., Any]) -> None:
    """Answer the global-node request `tag`: fn(sender, *args), while this node
    is a global node.

    A request from the node itself is refused (sender is always another
    node's ID), as is a request while this node is not global. What fn
    raises is logged as for handle(). AlreadyHandled (a ValueError) if the
    tag is handled already.
    """
    node.handle_global(tag, check_callback("handle_global function", fn))


# ---------------------------------------------------------------- links


class _LinkWatch(Handle):
    __slots__ = ("_unsubscribe",)

    def __init__(self, unsubscribe: Callable[[], None]) -> None:
        super().__init__()
        self._unsubscribe = unsubscribe

    def _undo(self) -> None:
        self._unsubscribe()

    def __repr__(self) -> str:
        return f"<aemp.lowlevel link watch {'active' if self._active else 'done'}>"


def watch_links(node: Node, fn: Callable[[str, bool], Any]) -> Handle:
    """Call fn(nodeid, True) when a link to a node comes up, fn(nodeid, False)
    when it is lost: at once, from the network's event, outside any port
    (after the mon_nodes callbacks). cancel() on the returned Handle stops it.

    An exception from fn is logged. Use mon_nodes for a port's view.
    """
    check_callback("watch_links function", fn)

    def changed(nodeid: str, up: bool) -> None:
        node.call_in(None, fn, (nodeid, up))

    return _LinkWatch(node.on_link(changed))


# ---------------------------------------------------------------- seeds


def add_seed(node: Node, addr: str) -> bool:
    """Keep connecting to the "host:port" `addr` as to a seed of the `seeds`
    key, from now until remove_seed or the node closes: at once, and again
    after each loss, with the seeds' back-off. The node becomes a slave of
    the node it finds there if it has no master yet (docs/api.md, the
    distributed database). True if `addr` was not a seed before.

    ConfigError for an address that is not host:port, or for a node
    without a network (no secret or cert, or not started).
    """
    if not isinstance(addr, str):
        raise InvalidArgument(f"add_seed: addr must be a 'host:port' str (got {addr!r})")
    parse_address(addr, "add_seed address")
    return node.add_seed(addr)


def remove_seed(node: Node, addr: str) -> bool:
    """Stop keeping the seed `addr` (also one of the `seeds` key): no more
    connecting to it; a link made through it stays until it is lost. True
    if it was a seed. ConfigError for a node without a network."""
    if not isinstance(addr, str):
        raise InvalidArgument(f"remove_seed: addr must be a 'host:port' str (got {addr!r})")
    return node.remove_seed(addr)


def seeds(node: Node) -> dict[str, str]:
    """The node's seed addresses now, configured and added: {address: the
    node ID found there, or "" while none was greeted there yet}."""
    return node.seeds()


# ---------------------------------------------------------------- ports


def port_alive(node: Node, port: str) -> bool:
    """True if `port` is a live port of this node (False for any other node's)."""
    check_port_id(port)
    return node.port_alive(port)


def ports(node: Node) -> list[str]:
    """The IDs of the node's live ports, oldest first."""
    return node.ports()


def port_info(node: Node, port: str) -> dict[str, Any] | None:
    """What the node holds for its live port `port`, None for any other port:
    {"monitors": local monitors on it, "watchers": [IDs of the other nodes
    that monitor it], "backlog": messages waiting in it}."""
    check_port_id(port)
    return node.port_info(port)


def port_task(node: Node, port: str) -> asyncio.Future[Any] | None:
    """The task that runs the async callback (or async init) of the node's
    live port `port` now, None if none does or for any other port. While
    it runs the port is busy: what is sent to the port waits in it."""
    check_port_id(port)
    return node.port_task(port)


def node_info(node: Node, nodeid: str) -> dict[str, Any] | None:
    """What the node keeps about another node, None if nothing:
    {"state", "monitors": {port name: local monitors}, "routes", "backoff",
    "waiting"} (see docs/lowlevel.md)."""
    check_port_id(nodeid)
    return node.node_info(nodeid)


def gated_port(node: Node) -> str:
    """Create a port whose messages wait until release(node, port); return its ID.

    What is sent to it meanwhile is kept in order and delivered once it
    is released (spawn makes its ports so, and runs the init first).
    """
    return node.gated_port()


def release(node: Node, port: str, fn: Callable[..., Any] | None = None, *args: Any) -> None:
    """Open a gated port: run fn(*args) in its context first, then deliver
    what waited.

    If fn returns an awaitable, it runs as the port's task and the port
    stays gated until it ends; if fn (or that task) raises, the port dies
    with ("die", "Error: text"). Nothing happens for a dead port;
    InvalidArgument for a port that is not gated.
    """
    check_port_id(port)
    if not node.port_is_local(port):
        raise NotLocalPort(f"release needs a port of this node ({node.id!r}), got {port!r}")
    if fn is not None:
        check_callback("release function", fn)
    node.release(port, fn, *args)


# ---------------------------------------------------------------- data connections


def expect_data_connection(node: Node, peer: str, dataconn_id: str) -> asyncio.Future[DataStream]:
    """Expect the data connection `dataconn_id` with node `peer`; the future
    of its RawStream.

    A data connection comes in on the node's listeners (or goes out to the
    peer's, with dial_data_connection) with the handshake and the
    authentication of a link, TLS too, and then carries raw bytes
    (docs/protocol.md, "Data connections"). Only `peer`, authenticated,
    may connect under this id. The expectation holds from this call on,
    so tell the peer to dial only after it; cancel the future (as
    asyncio.timeout does) to stop waiting: nothing else ends it but a
    failed dial_data_connection. OutOfRange for an id expected already or
    past the node's bound of pending data connections (1024); NodeClosed
    when the node is closed or has no network (no binds, seeds or secret).
    """
    net = node.network
    if net is None or node.closed:
        raise NodeClosed(
            f"node {node.id!r} has no network: data connections need binds, seeds or a secret"
        )
    check_port_id(peer)
    if "#" in peer:
        raise InvalidArgument(f"expect_data_connection: peer must be a node ID, got {peer!r}")
    if not isinstance(dataconn_id, str) or not dataconn_id:
        raise InvalidArgument(
            f"expect_data_connection: dataconn_id must be a non-empty str (got {dataconn_id!r})"
        )
    return net.expect_stream(dataconn_id, peer)  # type: ignore[return-value]


def dial_data_connection(
    node: Node, peer: str, dataconn_id: str, addrs: list[str] | None = None
) -> None:
    """Dial node `peer` for the data connection `dataconn_id`, which
    expect_data_connection must expect: at `addrs` and wherever else the
    node knows `peer` listens (the database), its unix sockets on this host
    first. The dial runs as a task of the node; when no address leads to
    the peer, the expectation's future fails with ConnectionError."""
    net = node.network
    if net is None or node.closed:
        raise NodeClosed(f"node {node.id!r} has no network to dial {peer!r} with")
    future = net.expected_stream(dataconn_id)
    if future is None:
        raise InvalidArgument(
            f"dial_data_connection: data connection {dataconn_id!r} is not expected "
            "(call expect_data_connection first)"
        )

    async def dialling() -> None:
        try:
            await net.dial_stream(dataconn_id, peer, list(addrs or ()))
        except ConnectionError as e:
            if not future.done():
                future.set_exception(e)

    task = node.spawn_task(dialling())
    future.add_done_callback(lambda f: task.cancel())


async def stream_pair(node: Node) -> tuple[DataStream, DataStream]:
    """Two DataStreams joined to each other within this node (a socket pair),
    with the node's stream_buffer bound: what one writes the other reads."""
    node.check_open()
    return await node.stream_pair()


def spawn_function(node: Node, target: str, *, remote: bool = True) -> Callable[..., Any]:
    """The function a spawn of `target` would run on this node: for a
    request from another node (remote, the default) only what the spawn
    policy allows (@spawnable, spawn_allow, not secure), for this node's own
    code (remote=False) whatever it names. Raises SpawnRefused for a
    refusal and SpawnError for a target that is malformed or names no
    function, with the reason spawn would give."""
    if not isinstance(target, str):
        raise InvalidArgument(f"spawn_function: target must be a str (got {target!r})")
    parse_spawn_target(target)
    return node.spawn_function(target, remote)


# ---------------------------------------------------------------- statistics


def database(node: Node) -> dict[str, Any]:
    """What the node's database holds now, as copies (for tests and for users):

    - ``local``: {family: {subkey: value}}, the entries this node set;
    - ``master``: the node ID of its master (itself when global), or None;
    - ``global``: whether it is a global node; ``globals``: the other global
      nodes it is meshed with, sorted ([] unless global);
    - ``merged``: {family: {subkey: value}}, the merged database of every
      node ({} unless global); ``shards``: {node ID: {family: {subkey:
      value}}}, what each source (a slave, another global, itself) gave
      it ({} unless global).
    """
    return node.database()


def global_nodes(node: Node) -> list[str]:
    """The other global nodes this node is meshed with, sorted ([] unless it is
    global): database(node)["globals"], without copying the whole database,
    for code that asks on every request (the aemp:// lease table does)."""
    return node.global_nodes()


def statistics(node: Node) -> dict[str, Any]:
    """What the node holds now, as a dict of counts (for tests and for users):

    - ``ports``: live local ports; ``queued``: entries in the run queue;
      ``backlog``: messages waiting in busy or gated ports; ``held``:
      messages extensions keep and count with hold() (a mailbox's);
    - ``tasks``, ``timers``: node-owned tasks and timers; ``routes``:
      cached routes to remote ports;
    - ``calls``: pending ``cal``s; ``call_targets``: ports cal watches
      (those of pending calls, and a bounded number kept idle);
    - ``remotes``: {node ID: "idle", "connecting", "up" or "firing"} for
      every other node the kernel keeps state for; ``unreachable``: nodes
      remembered as unreachable (bounded); ``backoffs``: attempts to reach
      a node that wait out a back-off;
    - ``links``: {node ID: {"address", "bytes_in", "bytes_out",
      "packets_in", "packets_out", "framing", "tls"}} for each connected
      node (bytes of the data phase; packets written on this link, and
      packets received from that node since its state was made);
      ``addresses``: {node ID: [addresses]}, where the node would dial it;
    - ``db``: {"entries": this node's own entries, "families": families it
      watches, "monitors": db_mon callbacks, "queries": pending queries,
      "global": whether it is a global node, "merged": entries of the
      merged database if so};
    - ``uptime``: seconds since the node was made; ``links_up``,
      ``links_lost``: links that came up and were lost since; ``restarts``:
      links that came up to a node linked before (it restarted, or the
      connection was lost and made again).
    """
    return node.statistics()


def status(node: Node) -> dict[str, Any]:
    """The node's status report, plain data that crosses the wire and JSON:
    {"nodeid", "version", "pid", "started" (seconds since the epoch),
    "uptime", "listeners", "seeds", "global", "master", "statistics"}.

    ``statistics`` is statistics(node) with ``remotes`` as {state: count},
    ``addresses`` as a count and ``links`` cut to the first 1000 by node ID
    (``links_omitted`` counts the rest). Every node answers the node request
    ``status`` with it, and the control socket's ``status`` command too.
    """
    return node.status()
