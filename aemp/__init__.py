"""aemp: actor-style message passing between processes and machines.

Nodes expose ports ("node#port") that receive messages through rcv
callbacks. The module-level functions act on the *current node*: the node
whose port callback is running, else the node ``configure()`` set up, else
an anonymous private node made for the running event loop. The same
operations are methods of :class:`Node`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, overload

from ._blocking import blocking, run_blocking
from ._call import Call
from ._config import effective, file_origin
from ._current import current_node, process_node, run, set_process_node
from ._errors import (
    AempError,
    AlreadyHandled,
    AuthError,
    CallTimeout,
    ConfigError,
    DbTimeout,
    InvalidArgument,
    InvalidFamily,
    InvalidID,
    JoinError,
    JoinRefused,
    JoinTimeout,
    LocalProtocolError,
    MessageError,
    NoCurrentNode,
    NoCurrentPort,
    NodeClosed,
    NotLocalPort,
    OutOfRange,
    Overloaded,
    PortDead,
    RemoteError,
    RemoteProtocolError,
    SpawnError,
    SpawnRefused,
)
from ._ids import node_of
from ._node import Node
from ._runtime import CURRENT, SELF, DbMonCallback, MonCallback, self_port
from ._services import start_services
from ._spawn import spawnable
from ._version import __version__
from .db._client import DbEntry, DbMonitor, Query
from .kernel import Handle, Monitor, NodeWatch, Timer, make_snd

__all__ = [
    "NODE",
    "SELF",
    "AempError",
    "AlreadyHandled",
    "AuthError",
    "Call",
    "CallTimeout",
    "ConfigError",
    "DbEntry",
    "DbMonCallback",
    "DbMonitor",
    "DbTimeout",
    "Handle",
    "InvalidFamily",
    "InvalidArgument",
    "InvalidID",
    "JoinError",
    "JoinRefused",
    "JoinTimeout",
    "LocalProtocolError",
    "MessageError",
    "MonCallback",
    "Monitor",
    "NoCurrentNode",
    "NoCurrentPort",
    "NodeWatch",
    "Node",
    "NodeClosed",
    "NotLocalPort",
    "OutOfRange",
    "Overloaded",
    "PortDead",
    "Query",
    "RemoteError",
    "RemoteProtocolError",
    "SpawnError",
    "SpawnRefused",
    "Timer",
    "__version__",
    "after",
    "blocking",
    "cal",
    "configure",
    "db_del",
    "db_families",
    "db_family",
    "db_keys",
    "db_mon",
    "db_reg",
    "db_set",
    "db_values",
    "drain",
    "kil",
    "mon",
    "mon_guard",
    "mon_nodes",
    "node_is_up",
    "node_of",
    "peval",
    "port",
    "port_is_local",
    "psub",
    "rcv",
    "run",
    "run_blocking",
    "self_port",
    "snd",
    "spawn",
    "spawnable",
    "up_nodes",
    "wait_joined",
]

Callback = Callable[..., Any]

_log = logging.getLogger("aemp.config")


def _shown(key: str, value: Any) -> str:
    """A value for the log: a secret is not written out."""
    if key == "secret" and value is not None:
        return "a secret"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def configure(
    profile: str | None = None, *, norc: bool = False, force: bool = False, **keys: Any
) -> Node:
    """Start the process's node from the configuration file and make it current.

    The keys come from, lowest first: the keyword arguments, the file's
    default section, the profile's parent chain, the profile itself;
    ``force=True`` puts the arguments on top, ``norc=True`` leaves the file
    out (see docs/cli.md). ``profile`` defaults to the host name; without
    a ``nodeid`` anywhere the node ID is ``"<profile>/<random>"``. Once the
    node is up, its ``services`` are started in order; if one fails, the
    node is closed and its exception propagates. Can be called once per
    process (again only after that node was closed).
    """
    node = process_node()
    if node is not None and not node.closed and not node.implicit:
        raise ConfigError(f"configure() was already called: this process's node is {node.id!r}")
    name = socket.gethostname() if profile is None else profile
    resolved, path = effective(name, keys, norc=norc, force=force)
    new = Node(**resolved.keys)
    if resolved.overridden:
        assert path is not None  # only the file overrides
        _log.warning(
            "node %s: the configuration file %s overrode what the program gave: %s "
            "(configure(..., force=True) puts the program's values on top)",
            new.id,
            file_origin(path),
            "; ".join(
                f"{key} {_shown(key, given)} -> {_shown(key, used)} from its {where}"
                for key, given, used, where in resolved.overridden
            ),
        )
    await new.start()
    if node is not None and node.implicit:
        await node.close()
    set_process_node(new)
    try:
        await start_services(new)
    except BaseException:
        await new.close()
        raise
    return new


async def wait_joined(timeout: float | None = 30.0) -> str:  # noqa: ASYNC109
    """Wait until the current node has joined its network; see :meth:`Node.wait_joined`."""
    return await (CURRENT.get() or current_node()).wait_joined(timeout)


def NODE() -> str:
    """The node ID of the current node."""
    return current_node().id


def port_is_local(port: str) -> bool:
    """True if the port (or node) ID belongs to the current node."""
    return current_node().port_is_local(port)


def port(default: Callback | None = None, /, **tags: Callback) -> str:
    """Create a port on the current node; callbacks as for ``rcv``."""
    return (CURRENT.get() or current_node()).port(default, **tags)


def rcv(
    port: str, default: Callback | Mapping[str, Callback | None] | Any | None = ..., /, **tags: Any
) -> str:
    """Set a local port's default callback and/or per-tag callbacks; return the port."""
    node = CURRENT.get() or current_node()
    if default is ...:
        return node.rcv(port, **tags)
    return node.rcv(port, default, **tags)


snd = make_snd(current_node)  # Node.snd on the current node, inlined: aemp/kernel/_dispatch.py


async def drain(target: str) -> None:
    """Wait until `target` (a port or node ID) can take more: snd's awaitable twin."""
    await (CURRENT.get() or current_node()).drain(target)


def kil(port: str, *reason: Any) -> None:
    """Kill a port; no reason is a normal exit, any reason an abnormal one."""
    (CURRENT.get() or current_node()).kil(port, *reason)


@overload
def mon(port: str, /) -> Monitor: ...
@overload
def mon(port: str, cb: MonCallback, /) -> Monitor: ...
@overload
def mon(port: str, other: str, /, *msg: Any) -> Monitor: ...


def mon(port: str, *action: Any) -> Monitor:
    """Monitor a port: ``mon(p, cb)``, ``mon(p, other)``, ``mon(p)``, ``mon(p, rcv, *msg)``."""
    return (CURRENT.get() or current_node()).mon(port, *action)


def mon_guard(port: str, *objs: Any) -> Monitor:
    """Keep objs alive until the port dies."""
    return (CURRENT.get() or current_node()).mon_guard(port, *objs)


def psub(fn: Callback) -> Callback:
    """Wrap fn to run later in the current port's context (errors kill that port)."""
    return (CURRENT.get() or current_node()).psub(fn)


def peval(port: str, fn: Callback, *args: Any) -> Any:
    """Run fn(*args) now in a local port's context (errors kill that port)."""
    return (CURRENT.get() or current_node()).peval(port, fn, *args)


def after(seconds: float, target: str | Callback, *msg: Any) -> Timer:
    """After `seconds`, send msg to the port `target`, or call `target()`."""
    return (CURRENT.get() or current_node()).after(seconds, target, *msg)


def spawn(node: str, target: str, *args: Any) -> str:
    """Create a port on `node` running ``target(*args)`` ("pkg.mod:func"); return its ID."""
    return (CURRENT.get() or current_node()).spawn(node, target, *args)


def cal(
    port: str,
    *msg: Any,
    timeout: float | None = 30.0,
    cb: Callback | None = None,
    err: Callable[[Exception], Any] | None = None,
) -> Call:
    """Request/reply: ``reply = await cal(port, *msg)``; see :meth:`Node.cal`."""
    return (CURRENT.get() or current_node()).cal(port, *msg, timeout=timeout, cb=cb, err=err)


def up_nodes() -> list[str]:
    """The IDs of the nodes the current node is connected to."""
    return current_node().up_nodes()


def node_is_up(nodeid: str) -> bool:
    """True if the current node has a live connection to `nodeid` (or is it)."""
    return current_node().node_is_up(nodeid)


def mon_nodes(cb: Callback) -> NodeWatch:
    """Call ``cb(nodeid, True)`` on connect and ``cb(nodeid, False, *reason)`` on loss."""
    return (CURRENT.get() or current_node()).mon_nodes(cb)


def db_set(family: str, subkey: str, value: Any = None) -> DbEntry:
    """Set an entry of the distributed database; cancel() on the handle deletes it."""
    return (CURRENT.get() or current_node()).db_set(family, subkey, value)


def db_del(family: str, *subkeys: str) -> None:
    """Delete entries this node set."""
    (CURRENT.get() or current_node()).db_del(family, *subkeys)


def db_reg(family: str, port: str | None = None, value: Any = None) -> DbEntry:
    """Register a port (default SELF) in a family until it dies or the handle is cancelled."""
    return (CURRENT.get() or current_node()).db_reg(family, port, value)


def db_family(
    family: str,
    *,
    timeout: float | None = 30.0,
    cb: Callback | None = None,
    err: Callable[[Exception], Any] | None = None,
) -> Query[dict[str, Any]]:
    """``await db_family(f)``: the family as a dict, from the global nodes."""
    return (CURRENT.get() or current_node()).db_family(family, timeout=timeout, cb=cb, err=err)


def db_families(
    *,
    timeout: float | None = 30.0,
    cb: Callback | None = None,
    err: Callable[[Exception], Any] | None = None,
) -> Query[dict[str, int]]:
    """``await db_families()``: every non-empty family with its number of entries."""
    return (CURRENT.get() or current_node()).db_families(timeout=timeout, cb=cb, err=err)


def db_keys(
    family: str,
    *,
    timeout: float | None = 30.0,
    cb: Callback | None = None,
    err: Callable[[Exception], Any] | None = None,
) -> Query[list[str]]:
    """``await db_keys(f)``: the family's subkeys as a list."""
    return (CURRENT.get() or current_node()).db_keys(family, timeout=timeout, cb=cb, err=err)


def db_values(
    family: str,
    *,
    timeout: float | None = 30.0,
    cb: Callback | None = None,
    err: Callable[[Exception], Any] | None = None,
) -> Query[list[Any]]:
    """``await db_values(f)``: the family's values as a list."""
    return (CURRENT.get() or current_node()).db_values(family, timeout=timeout, cb=cb, err=err)


def db_mon(family: str, cb: DbMonCallback) -> DbMonitor:
    """Watch a family: ``cb(family, added, changed, deleted)``, first with everything."""
    return (CURRENT.get() or current_node()).db_mon(family, cb)
