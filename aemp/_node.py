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

import asyncio
import logging
import os
import time
from array import array
from collections.abc import Callable, Collection
from typing import Any

from ._call import Call, CallTable
from ._config import Config
from ._errors import ConfigError, InvalidArgument, JoinRefused, JoinTimeout, NodeClosed, OutOfRange
from ._ids import check_port_id, expand_nodeid
from ._message import check_message
from ._runtime import SELF, DbMonCallback
from ._spawn import Spawner, resolve_spawn_target
from ._version import __version__
from .db._client import Db, DbEntry, DbMonitor, Query
from .kernel import Kernel
from .net import Network as Network  # for aemp.testing, which types its hook with it
from .net import RawStream, local_pair, make_settings

log = logging.getLogger("aemp.node")

# What the status report (the "status" node request) lists of the links:
# the first this many by node ID, so that a global node of thousands of
# links answers in a packet far below max_packet; the rest are counted.
STATUS_LINKS = 1000
# Node IDs remembered (by hash) as linked before, to count a link that comes up
# again (statistics' "restarts"); the oldest are forgotten first.
MAX_LINKED = 4096

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


def _refused(why: str) -> bool:
    """A seed's problem that waiting does not mend: it refused our authentication."""
    return why.startswith("authentication failure") or "certificate verify failed" in why


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
        self.max_unsent = cfg.max_unsent
        self.implicit = _implicit
        self._spawner = Spawner(self, self.config.secure, self.config.spawn_allow)
        self._calls = CallTable(self)
        self._net: Network | None = None
        self._db = Db(self)
        # what the capabilities above aemp.lowlevel keep per node (aemp/_blocking.py's
        # threads), by name: lowlevel.extension; each cleans up with on_close
        self._extensions: dict[str, Any] = {}
        # for statistics: when the node was made (wall clock and loop clock),
        # links that came up and were lost, the nodes linked before
        self.started = time.time()
        self._started_at = self.loop.time()
        self._links_up = self._links_lost = self._restarts = 0
        self._linked = array("q")  # hashes of the node IDs linked before, a ring
        self._linked_next = 0
        if not self.config.seeds:
            self._db.become_global()  # no seed to attach to: its own master
        self.on_link(self._link_changed)
        self.handle("status", self._status_request)
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

    def add_seed(self, addr: str) -> bool:
        """Keep connecting to `addr` as to a configured seed (see aemp.lowlevel)."""
        self.check_open()
        net = self._need_network("add_seed")
        new = addr not in net.seeds
        net.keep_seed(addr)
        return new

    def remove_seed(self, addr: str) -> bool:
        """Stop keeping the seed `addr` (see aemp.lowlevel)."""
        return self._need_network("remove_seed").drop_seed(addr)

    def seeds(self) -> dict[str, str]:
        """{seed address: its node ID once greeted, else ""} (see aemp.lowlevel)."""
        return dict(self._net.seeds) if self._net is not None else {}

    def _need_network(self, what: str) -> Network:
        if self._net is None:
            raise ConfigError(
                f"{what}: node {self.id!r} has no network: give it a 'secret' or 'cert' "
                "(and 'binds' for others to reach it), and start() it"
            )
        return self._net

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_joined(self, timeout: float | None = 30.0) -> str:  # noqa: ASYNC109
        """Wait until the node has joined its network; return its master.

        Joined means a global node (one of the seeds, or the node itself
        when it has no seeds) serves its database requests, so names,
        lookups and db_* work from here on. Raises JoinRefused at once
        when every seed refused this node's authentication (a wrong
        secret or certificate), JoinTimeout when no global node served it
        within `timeout`; both name each seed address tried and why its
        last attempt failed. NodeClosed if the node is closed meanwhile.
        (A timeout argument rather than asyncio.timeout around it: running
        out is not an error of the caller's, and the JoinTimeout says why.)
        """
        limit = check_timeout(timeout, "wait_joined")
        self.check_open()
        db = self._db
        try:
            async with asyncio.timeout(limit):
                while db.master is None:
                    self.check_open()
                    problems = self._seed_problems()
                    seeds = self._net.seeds if self._net is not None else {}
                    if (
                        problems
                        and set(problems) >= set(seeds)  # every seed failed, and
                        and all(_refused(why) for why in problems.values())  # refused us
                    ):
                        raise JoinRefused(self.id, problems)
                    waits: list[asyncio.Future[None]] = [db.master_changed()]
                    if self._net is not None:
                        waits.append(self._net.changed())
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for fut in waits:
                            fut.cancel()
        except TimeoutError:
            assert limit is not None
            raise JoinTimeout(
                self.id, self._seed_problems(), limit, len(self.config.seeds)
            ) from None
        self.check_open()
        return db.master

    def _seed_problems(self) -> dict[str, str]:
        return dict(self._net.seed_problems) if self._net is not None else {}

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
            self._links_up += 1
            # the node IDs' hashes, 8 bytes each, not the IDs: a node of many
            # short-lived clients keeps no more of them than that
            h = hash(nodeid)
            linked = self._linked
            if h in linked:
                self._restarts += 1
            elif len(linked) < MAX_LINKED:
                linked.append(h)
            else:  # the oldest is forgotten first
                linked[self._linked_next] = h
                self._linked_next = (self._linked_next + 1) % MAX_LINKED
            self._db.node_up(nodeid)
        else:
            self._links_lost += 1
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

    def spawn_linked(self, node: str, link: str, target: str, *args: Any) -> str:
        """spawn(), and the new port dies when `link` dies (see aemp.lowlevel)."""
        return self._spawner.spawn(node, target, args, link)

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
    ) -> Query[dict[str, Any]]:
        """The family as a {subkey: value} dict, from the global nodes."""
        return self._db.query("family", family, check_timeout(timeout, "db_family"), cb, err)

    def db_keys(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query[list[str]]:
        """The family's subkeys as a list, from the global nodes."""
        return self._db.query("keys", family, check_timeout(timeout, "db_keys"), cb, err)

    def db_values(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query[list[Any]]:
        """The family's values as a list, from the global nodes."""
        return self._db.query("values", family, check_timeout(timeout, "db_values"), cb, err)

    def db_families(
        self,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query[dict[str, int]]:
        """Every non-empty family as {family: number of entries}, from the global nodes."""
        return self._db.query("families", "", check_timeout(timeout, "db_families"), cb, err)

    def db_mon(self, family: str, cb: DbMonCallback) -> DbMonitor:
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

    def global_nodes(self) -> list[str]:
        """The other global nodes this one is meshed with, sorted ([] unless
        global): database()["globals"] without copying the database."""
        glob = self._db.glob
        return sorted(glob.globals) if glob is not None else []

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
        stats["uptime"] = self.loop.time() - self._started_at
        stats["links_up"] = self._links_up
        stats["links_lost"] = self._links_lost
        stats["restarts"] = self._restarts
        return stats

    def status(self) -> dict[str, Any]:
        """The node's status report (see aemp.lowlevel.status): plain data only."""
        stats = self.statistics()
        links = stats["links"]
        shown = sorted(links)[:STATUS_LINKS]
        stats["links"] = {n: links[n] for n in shown}
        stats["links_omitted"] = len(links) - len(shown)
        states: dict[str, int] = {}
        for state in stats["remotes"].values():
            states[state] = states.get(state, 0) + 1
        stats["remotes"] = states
        stats["addresses"] = len(stats["addresses"])
        return {
            "nodeid": self.id,
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started,
            "uptime": stats["uptime"],
            "listeners": self.listeners,
            "seeds": list(self.config.seeds),
            "global": self.is_global,
            "master": self.master,
            "statistics": stats,
        }

    def _status_request(self, sender: str | None, *reply: Any) -> None:
        # ["", "status", reply port, extra...]: answered like time and up_nodes,
        # to a port only (a node port as reply would be a request in our name)
        port = reply[0] if reply else None
        if type(port) is not str or not port.partition("#")[2]:
            raise ValueError(f"the reply port {port!r:.60} is not a port ID 'node#name'")
        self.snd(port, *reply[1:], self.status())
