# aemp.Node: the kernel (aemp/kernel/) with the parts that make it a node,
# built and wired here: the network (aemp/net/), the database
# (aemp/db/, with the global service), spawn (aemp/_spawn.py) and cal
# (aemp/_call.py). This is the one module that knows both the kernel and
# the network; they meet through the Protocols of aemp/_seam.py: the
# network calls the LinkOwner methods (the kernel's, and the database's
# below), the kernel dials through the network as its Connector.
#
# Here are the lifecycle (start, close) and the API methods that belong to
# the layers above the kernel (spawn, cal, db_*); everything else a Node
# does is Kernel's.

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from ._call import Call, CallTable
from ._config import Config
from ._errors import InvalidArgument, NodeClosed, OutOfRange
from ._ids import check_port_id, expand_nodeid
from ._message import check_message
from ._runtime import SELF
from ._spawn import Spawner, resolve_spawn_target
from .db._client import Db, DbEntry, DbMonitor, Query
from .kernel import Kernel
from .net import Network as Network  # for aemp.testing, which types its hook with it
from .net import RawStream, local_pair, make_settings

log = logging.getLogger("aemp.node")

Callback = Callable[..., Any]


def check_timeout(timeout: object, what: str) -> float | None:
    """timeout as a float, or None; InvalidArgument unless it is a number (a
    bool is none here) or None, OutOfRange unless it is positive."""
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise InvalidArgument(
            f"{what}: timeout must be a positive number or None (got {timeout!r})"
        )
    if not timeout > 0:
        raise OutOfRange(f"{what}: timeout must be a positive number or None (got {timeout!r})")
    return float(timeout)


class Node(Kernel):
    """One node: its ports, its run queue, its monitors, its network and database.

    Use ``async with Node(...) as node`` or ``await Node(...).start()`` and
    ``await node.close()``. The keyword arguments are the configuration keys
    of docs/api.md; a Node reads no config file.
    """

    def __init__(self, *, _implicit: bool = False, **keys: Any) -> None:
        self.config = Config.from_keys(keys)
        nodeid = self.config.nodeid
        super().__init__(
            expand_nodeid("anon/" if nodeid is None else nodeid),
            self.config.monitor_timeout,
            self.config.queue_limit,
        )
        cfg = self.config
        self.send_limits = (cfg.framing_format, cfg.max_packet, cfg.max_objects)
        self.implicit = _implicit
        self._spawner = Spawner(self, self.config.secure, self.config.spawn_allow)
        self._calls = CallTable(self)
        self._net: Network | None = None
        self._db = Db(self)
        # what the capabilities above aemp.lowlevel keep per node (aemp/_blocking.py's
        # threads), by name: lowlevel.extension; each cleans up with on_close
        self._extensions: dict[str, Any] = {}
        if not self.config.seeds:
            self._db.become_global()  # no seed to attach to: its own master
        self.on_link(self._link_changed)
        self.on_close(self._fail_calls)
        self.on_close(self._db.close)

    def __repr__(self) -> str:
        return f"<aemp.Node {self.id!r}{' closed' if self.closed else ''}>"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> Node:
        """Bring the node up: listen on its binds and connect to its seeds."""
        self.check_open()
        cfg = self.config
        if self._net is None and (cfg.binds or cfg.seeds or cfg.secret or cfg.cert):
            if self._spawner.policy.anything and not cfg.secure:
                log.warning("node %s: spawn_allow has '*': every node with the secret may "
                            "run any function here", self.id)  # fmt: skip
            self._net = Network(self, cfg, make_settings(cfg, self.id))
            self.set_connector(self._net)
            await self._net.listen(cfg.binds)
            self._db.started(self._net.listeners)
            for seed in cfg.seeds:
                self._net.keep_seed(seed)
        return self

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def listeners(self) -> list[str]:
        """The "host:port" addresses this node really listens on."""
        return list(self._net.listeners) if self._net is not None else []

    @property
    def network(self) -> Network | None:
        """The node's network (aemp.net.Network), None without one: for
        aemp.testing and diagnostics, not part of the API of docs/api.md."""
        return self._net

    async def close(self) -> None:
        """Stop the node: every port dies silently, every task and timer ends.

        Pending ``cal``s fail with NodeClosed (a callback-form call hears of
        it through its ``err``, if it has one). Monitors of local ports do
        not fire: there is nobody left on this node to tell.
        """
        if self.closed:
            return
        self.closed = True
        if self._net is not None:
            await self._net.close()
        await super().close()

    def extension(self, name: str, make: Callable[[], Any]) -> Any:
        """The node's object for the extension `name`, made by make() on first use."""
        try:
            return self._extensions[name]
        except KeyError:
            self.check_open()
            obj = self._extensions[name] = make()
            return obj

    def _fail_calls(self) -> None:
        for call in list(self._calls):
            call._fail(NodeClosed(f"node {self.id!r} was closed"))

    # ---------------------------------------------------------------- links (the database's part)

    def _link_changed(self, nodeid: str, up: bool) -> None:
        if up:
            self._db.node_up(nodeid)
        else:
            self._db.node_down(nodeid)

    def seed_greeted(self, nodeid: str) -> None:
        """A seed address turned out to be node `nodeid` (it may become our master)."""
        self._db.seed_known(nodeid)

    def seed_is_self(self) -> None:
        """A seed address leads to this very node (so it is a global node)."""
        self._db.become_global("a seed address leads here")

    async def lookup(self, nodeid: str) -> list[str]:
        """Where `nodeid` listens, as the database knows it ([] if unknown)."""
        return await self._db.lookup(nodeid)

    def dead_port_reason(self, name: str, nodeid: str) -> tuple[Any, ...] | None:
        # a spawn that failed at once says why, even to a mon1 that came late
        # (only to the node that asked for it: the reason may hold its data)
        return self._spawner.book.death(name, nodeid)

    # ---------------------------------------------------------------- spawn and cal

    def spawn(self, node: str, target: str, *args: Any) -> str:
        """Create a port on `node` and run target(*args) there in its context.

        Returns the new port ID at once; the function runs later, from the
        event loop. An exception in it kills the new port with ("die", ...).
        Another node runs only functions marked @spawnable or named by its
        spawn_allow; it kills a refused one with ("die", "SpawnRefused: ...").
        """
        return self._spawner.spawn(node, target, args)

    def cal(
        self,
        port: str,
        *msg: Any,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Call:
        """Send msg plus a fresh reply port to `port` and wait for one reply.

        ``await node.cal(...)`` gives the reply as a tuple, or raises
        CallTimeout, or PortDead when the target dies first. With ``cb``, the
        reply is passed as ``cb(*reply)`` and a failure as ``err(exc)``
        (without ``err`` a failure kills the calling port).
        """
        if self.closed:
            self.check_open()
        if port not in self._routes and port not in self._ports:  # else known good
            check_port_id(port)
        if not msg:
            check_message(msg)  # raises; the send checks the rest
        if timeout is not None and not (type(timeout) is float and timeout > 0):
            check_timeout(timeout, "cal")
        if cb is not None and not callable(cb):
            raise InvalidArgument(
                f"cal cb must be callable or None (got {cb!r}, a {type(cb).__name__})"
            )
        return Call(self, self._calls, port, msg, timeout, cb, err, SELF.get())

    def spawn_function(self, target: str, remote: bool) -> Callback:
        """The function `target` names, as spawn would run it: for a request
        from another node (remote) under the spawn policy, else for this
        node's own code. Raises SpawnRefused or SpawnError."""
        if remote:
            return self._spawner.policy.resolve(target, self.id)
        return resolve_spawn_target(target)

    async def stream_pair(self) -> tuple[RawStream, RawStream]:
        """Two data streams joined within this node (see aemp.lowlevel.stream_pair)."""
        a, b = await local_pair(self.config.stream_buffer)
        a.peer = b.peer = self.id
        return a, b

    def take_name(self, kind: str) -> str:
        """Kernel.take_name, and "spawn": the name of the next spawn's port."""
        if kind == "spawn":
            return self._spawner.take_name()
        return super().take_name(kind)

    def NODE(self) -> str:
        return self.id

    # ---------------------------------------------------------------- the database

    def db_set(self, family: str, subkey: str, value: Any = None) -> DbEntry:
        """Set family/subkey to value; the handle's cancel() deletes it again."""
        self.check_open()
        return self._db.set(family, subkey, value)

    def db_del(self, family: str, *subkeys: str) -> None:
        """Delete entries this node set."""
        self.check_open()
        self._db.delete(family, *subkeys)

    def db_reg(self, family: str, port: str | None = None, value: Any = None) -> DbEntry:
        """Set family/port (default SELF) to value until the port dies or cancel()."""
        self.check_open()
        return self._db.reg(family, port, value)

    def db_family(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family as a {subkey: value} dict, from the global nodes."""
        return self._db.query("family", family, check_timeout(timeout, "db_family"), cb, err)

    def db_keys(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family's subkeys as a list, from the global nodes."""
        return self._db.query("keys", family, check_timeout(timeout, "db_keys"), cb, err)

    def db_values(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family's values as a list, from the global nodes."""
        return self._db.query("values", family, check_timeout(timeout, "db_values"), cb, err)

    def db_mon(self, family: str, cb: Callback) -> DbMonitor:
        """Call cb(family, added, changed, deleted): first with the whole family, then per change.

        ``family`` is a read-only live view of the family as this node knows it.
        """
        return self._db.mon(family, cb)

    def handle_global(self, tag: str, fn: Callable[..., None]) -> None:
        """Answer the global-node request `tag` with fn(sender, *args) (see aemp.lowlevel)."""
        if type(tag) is not str or not tag:
            raise InvalidArgument(f"handle_global: tag must be a non-empty str (got {tag!r})")
        self._db.handle_global(tag, lambda service, sender, *args: fn(sender, *args))

    @property
    def is_global(self) -> bool:
        """True if this node holds the merged database (a seed someone attached to)."""
        return self._db.glob is not None

    @property
    def master(self) -> str | None:
        """The global node this node's database requests go to (itself if global)."""
        return self._db.master

    # ---------------------------------------------------------------- the database's host

    def seed_ids(self) -> Collection[str] | None:
        """The node IDs the seed addresses turned out to be ("" for one not yet
        greeted); None while the node has no network (aemp/db/_host.py)."""
        return None if self._net is None else self._net.seeds.values()

    # ---------------------------------------------------------------- statistics

    def database(self) -> dict[str, Any]:
        """Copies of this node's database state (see aemp.lowlevel.database)."""
        return self._db.snapshot()

    def statistics(self) -> dict[str, Any]:
        """Counts of the node's state (see aemp.lowlevel.statistics)."""
        stats = super().statistics()
        stats["calls"] = len(self._calls)
        stats["call_targets"] = self._calls.targets
        net = self._net
        stats["links"] = links = net.statistics() if net is not None else {}
        for nodeid, link in links.items():
            remote = self._remotes.get(nodeid)
            link["packets_in"] = remote.packets_in if remote is not None else 0
        stats["addresses"] = {n: list(a) for n, a in net.addresses.items()} if net else {}
        stats["db"] = self._db.statistics()
        return stats
