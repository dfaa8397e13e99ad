# Requests to the node port ("" as port name), from other nodes or from
# local code that sends to the node ID: the open registry (Requests, a part
# of Kernel: handle, handles, request) and the kernel's own requests.
#
# The kernel's own requests are small functions in one table,
# CORE_REQUESTS; the layers above add theirs with Kernel.handle (spawn,
# the database). A request with arguments of the wrong shape is logged and
# ignored: nothing a peer sends can crash the node (guarantee 8). Unknown
# requests are never taken as function names to call, unlike AnyEvent::MP;
# `eval` is refused. An unknown request that ends with a port of the
# asking node (cal's reply port) is answered ("error", why) there.
# `remote` is the link a request came in on, and every check of what a
# peer may do is made against it, relayed requests included. None means
# this node's own code sent it to its own node port;
# that gives no more authority than a peer has, since such a request is
# most likely a reply or relay that a peer built (a callback answering
# snd(reply, *what_the_peer_sent) with the node ID as reply): spawn
# requests meet the spawn policy and g_* requests are refused (this node's
# own code spawns with spawn() and writes with db_set). A reply goes to a
# port, never to a node port.
#
# May import the leaves and, of the kernel, _state.py (and _remote.py, for
# its type).

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import AempError, AlreadyHandled, InvalidArgument, InvalidID
from .._ids import check_port_id
from ._state import KernelState, check_callback

if TYPE_CHECKING:
    from ._remote import Remote

log = logging.getLogger("aemp.node")


def _name(value: Any) -> str:
    if type(value) is not str or "#" in value:
        raise TypeError(f"expected a port name, got {value!r}")
    return value


def _reply(node: KernelState, reply: tuple[Any, ...], result: Any) -> None:
    # A reply goes to a port. Sent to a node port it would be a request in
    # this node's name (to itself, or to a third node), built by the asker:
    # "can", 0, <node ID>, "AnyEvent::MP::_spawn", ... was a spawn past
    # every check, with the answer (False) as its last argument.
    if reply:
        port = reply[0]
        if type(port) is not str or not port.partition("#")[2]:
            raise ValueError(f"the reply port {port!r:.60} is not a port ID 'node#name'")
        node.snd(port, *reply[1:], result)


def _mon1(node: KernelState, remote: Remote | None, name: Any) -> None:
    name = _name(name)
    if remote is None:
        return
    p = node._ports.get(node._prefix + name)
    if p is None:
        # a spawn that failed at once says why, even to a mon1 that came late
        # (only to the node that asked for it: the reason may hold its data)
        reason = node.dead_port_reason(name, remote.id) or (
            "no_such_port",
            "cannot monitor nonexistent port",
            node._prefix + name,
        )
        remote.send(["", "kil0", name, *reason])
        return
    if p.watchers is None:
        p.watchers = set()
    p.watchers.add(remote.id)
    remote.watched.add(name)


def _mon0(node: KernelState, remote: Remote | None, name: Any) -> None:
    name = _name(name)
    p = node._ports.get(node._prefix + name)
    if remote is not None:
        remote.watched.discard(name)
        if p is not None and p.watchers:
            p.watchers.discard(remote.id)


def _kil0(node: KernelState, remote: Remote | None, name: Any, *reason: Any) -> None:
    if remote is not None:
        remote.killed(_name(name), reason)


def _kil1(node: KernelState, remote: Remote | None, name: Any, *reason: Any) -> None:
    p = node._ports.get(node._prefix + _name(name))
    if p is not None:
        node._kill(p, reason)


def _snd(node: KernelState, remote: Remote | None, port: Any, *msg: Any) -> None:
    if remote is None:
        node.snd(port, *msg)
        return
    # A relay carries the authority of the link it came in on, never more
    # (docs/protocol.md). A request relayed to this node is handled at once,
    # as one from that link; a chain of such relays (snd relaying snd ...)
    # is unwound in one pass, whatever its length. A request for another
    # node is not relayed, since it would arrive there as this node's own.
    # A message to a port is just a message.
    i = 0
    while type(port) is str and port.partition("#")[2] == "":
        if port != node.id and port != node._prefix:
            log.warning("node %s: refused to relay a node request from %s to %.60r",
                        node.id, remote.id, port)  # fmt: skip
            return
        if i + 1 < len(msg) and msg[i] == "snd":
            port = msg[i + 1]
            i += 2
            continue
        handle_node_request(node, remote, list(msg[i:]))
        return
    node.snd(port, *msg[i:])


def _can(node: KernelState, remote: Remote | None, tag: Any, *reply: Any) -> None:
    _reply(node, reply, node.handles(tag))


def _time(node: KernelState, remote: Remote | None, *reply: Any) -> None:
    _reply(node, reply, time.time())


def _eval(node: KernelState, remote: Remote | None, *args: Any) -> None:
    log.warning("node %s: refused an 'eval' request from %s", node.id, remote and remote.id)


# The kernel's own requests, handled with its internals: fn(kernel, remote, *args).
# Everything else (spawn, the database's g_* requests, extensions) registers
# through Kernel.handle(tag, fn), with fn(sender, *args).
CORE_REQUESTS: dict[str, Callable[..., None]] = {
    "mon1": _mon1,
    "mon0": _mon0,
    "kil0": _kil0,
    "kil1": _kil1,
    "snd": _snd,
    "can": _can,
    "time": _time,
    "up_nodes": lambda node, remote, *reply: _reply(node, reply, node.up_nodes()),
    "eval": _eval,
    "devnull": lambda *_: None,
    "": lambda *_: None,
}


def _refuse_unknown(node: KernelState, remote: Remote | None, tag: Any, last: Any) -> None:
    """An unknown request whose last argument is a port of the asking node
    (cal's reply port) is answered ("error", why), so that the caller
    need not wait out its timeout. Only a port of the sender: an answer
    elsewhere would be this node's word on the sender's behalf."""
    asker = remote.id if remote is not None else node.id
    if type(last) is not str or last.partition("#")[0] != asker or not last.partition("#")[2]:
        return
    known = ", ".join(sorted(t for t in node._requests if t and t != "eval"))
    why = f"node {node.id} has no node request {tag!r:.60} (it answers {known})"
    node.snd(last, "error", why)


def handle_node_request(node: KernelState, remote: Remote | None, msg: list[Any]) -> None:
    if not msg:
        return
    tag = msg[0]
    handler = node._requests.get(tag) if type(tag) is str else None
    who = remote.id if remote is not None else "this node"
    if handler is None:
        log.warning("node %s: unknown node request %.60r from %s ignored", node.id, tag, who)
        _refuse_unknown(node, remote, tag, msg[-1])
        return
    try:
        handler(remote, *msg[1:])
    except (TypeError, ValueError, AempError) as e:
        log.warning("node %s: malformed %r request from %s ignored: %s", node.id, tag, who, e)
    except Exception:
        # a handler's own fault (an extension's bug), named as such; the
        # link, the run queue and the other requests go on
        log.exception("node %s: the handler of the node request %r from %s failed",
                      node.id, tag, who)  # fmt: skip


class Requests(KernelState):
    """The open registry of node requests (a part of Kernel)."""

    def handle(self, tag: str, fn: Callable[..., None]) -> None:
        """Handle the node request `tag`: fn(sender, *args) for each ["", tag, *args].

        sender is the node ID of the link it came in on, or None when this
        node's own code sent it to its own node port. A malformed request is
        answered by raising TypeError or ValueError (logged as such).
        AlreadyHandled (a ValueError) if the tag is taken.
        """
        if type(tag) is not str or not tag:
            raise InvalidArgument(f"handle: tag must be a non-empty str (got {tag!r})")
        check_callback("handle callback", fn)
        if tag in self._requests:
            raise AlreadyHandled(f"handle: the node request {tag!r} is handled already")

        def handler(remote: Remote | None, *args: Any) -> None:
            fn(remote.id if remote is not None else None, *args)

        self._requests[tag] = handler

    def handles(self, tag: object) -> bool:
        """True if this node answers the node request `tag` (what `can` asks)."""
        return type(tag) is str and tag in self._requests and tag != "eval"

    def request(self, nodeid: str, tag: str, *args: Any) -> None:
        """Send the node request [tag, *args] to the node `nodeid` (this one included)."""
        check_port_id(nodeid)
        if "#" in nodeid:
            raise InvalidID(f"request needs a node ID, got the port ID {nodeid!r}")
        if type(tag) is not str:
            raise InvalidArgument(f"request: tag must be a str (got {tag!r})")
        self.send(nodeid, (tag, *args))

    def _node_request(self, remote: Remote | None, msg: list[Any]) -> None:
        handle_node_request(self, remote, msg)
