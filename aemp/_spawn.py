# Spawn: finding the function a spawn names, deciding whether a request
# from another node may run it, and keeping spawned port names unique.
#
# What may run (docs/api.md, spawn). Code of this node spawns whatever it
# names: it could call the function itself. A spawn request from another
# node runs a function only if the function is marked with @spawnable or a
# spawn_allow entry names it: "pkg.mod:func" that function, "pkg.mod:*" the
# plain functions defined in pkg.mod whose names do not start with "_" (not
# those it imports, nor a module __getattr__ that may import more), "*"
# anything. A request that this node's own code sent to its own node port
# is checked the same way: its own code spawns with spawn(), so such a
# request is a reply or relay that a peer built.
# A peer never makes the node import a module: a marked function counts
# once its module is loaded (by the node's own code or a service), and only
# an allow-list entry lets a request import the module it names, because
# importing runs the module's code (venv's __main__ makes directories, for
# one). The path after the colon reaches through classes only, never into
# another module, so "allowed:os.system" is no way to os.system; the walk
# reads dictionaries and runs no code (no property, descriptor, module
# __getattr__, nor a classmethod's wrapped descriptor).
#
# Which name a spawned port may take (guarantee 4). The spawner names the
# port, as AnyEvent::MP's protocol has it, so the node checks that the name
# makes a valid port ID (printable, no space or ";") that never lived
# here: it must be a prefix plus a counter of lower-case
# letters (a, ..., z, aa, ... as aemp and AnyEvent::MP count), and the
# counter must be above every one seen with that prefix. Names with this
# node's own prefixes are never taken by a request. A prefix belongs to the
# node that used it first: another node that saw its names cannot jump its
# counter ahead and so refuse all its later spawns. The high-water marks of
# at most MAX_SPAWN_PREFIXES prefixes are kept; past that a new prefix is
# refused, since forgetting one would let its old names live again.
#
# Why a spawn failed. A spawner sends its mon1 right behind the spawn
# request; when the spawn was refused or its init failed before the mon1
# arrived, there is no port left to watch. The last MAX_SPAWN_DEATHS such
# reasons are kept by name, and the spawner's mon1 gets the real reason
# instead of no_such_port (another node's mon1 gets no_such_port).
#
# Linked spawns (lowlevel.spawn_linked, the request SPAWN_LINKED). A
# supervisor must leave no orphans, also when its own node is lost, and
# only the node that runs the child can see that. So the request names a
# link port, and the node that runs the new port monitors the link before
# the init runs: when the link dies, the new port dies with the same
# reason (a normal exit too), and when the link's node is lost, with its
# transport_error. One request, not a spawn and a second request, so that
# no child can exist without its link: a connection lost between the two
# would leave one running. The link monitor is cancelled when the new
# port dies first, so a long-lived link does not collect dead monitors.

from __future__ import annotations

import importlib
import inspect
import logging
import string
import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import InvalidArgument, SpawnError, SpawnRefused
from ._ids import check_port_id, counter_names
from ._message import check_message
from ._runtime import SELF
from ._targets import check_spawn_allow, parse_spawn_target, show
from .kernel import die_reason

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger("aemp.node")

Callback = Callable[..., Any]
F = TypeVar("F")

MAX_SPAWN_PREFIXES = 65_536  # spawner prefixes (one per spawning node's run) remembered
MAX_SPAWN_NAME = 128  # characters in a spawned port's name
MAX_SPAWN_DEATHS = 1024  # recent reasons of spawns that failed at once, for a late mon1
MAX_DEATH_TEXT = 400  # characters of such a reason's text that are kept
SPAWN = "AnyEvent::MP::_spawn"  # the node request of a spawn
SPAWN_LINKED = "spawn_linked"  # aemp's spawn whose new port dies with a link port

_MARK = "__aemp_spawnable__"


def spawnable(fn: F) -> F:
    """Mark a function as one that other nodes may start with ``spawn``.

    Use it on module-level functions (plain or ``async def``). On a
    ``staticmethod`` or ``classmethod`` (in either order of decorators) it
    marks the function inside. Returns its argument unchanged.
    """
    inner = fn.__func__ if isinstance(fn, staticmethod | classmethod) else fn
    if not inspect.isfunction(inner):
        raise InvalidArgument(
            f"@spawnable marks functions (def or async def), got {fn!r}, a {type(fn).__name__}"
        )
    setattr(inner, _MARK, True)
    return fn


def is_spawnable(obj: object) -> bool:
    """True for a function marked with @spawnable (or a method of one)."""
    if inspect.ismethod(obj):
        obj = obj.__func__
    return inspect.isfunction(obj) and obj.__dict__.get(_MARK) is True


def resolve_spawn_target(target: str) -> Callback:
    """The function a target names, importing its module: for this node's own code."""
    module_name, func_path = parse_spawn_target(target)
    obj: Any = importlib.import_module(module_name)
    for part in func_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpawnError(f"spawn target {target!r} names a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


class SpawnPolicy:
    """Which functions spawn requests from other nodes may run (secure, spawn_allow)."""

    __slots__ = ("allow", "anything", "secure")

    def __init__(self, secure: bool, allow: Iterable[str] | None) -> None:
        self.secure = secure
        self.allow = frozenset(check_spawn_allow(e) for e in allow or ())
        self.anything = ("*", "*") in self.allow

    def resolve(self, target: object, nodeid: str) -> Callback:
        """The function a request from another node may run; else raise SpawnRefused.

        Raises SpawnError for a malformed target, and what importing an
        allowed module raises.
        """
        if self.secure:
            raise SpawnRefused(f"node {nodeid} refuses spawns from other nodes (secure)")
        module_name, path = parse_spawn_target(target)
        if self.anything:
            return resolve_spawn_target(f"{module_name}:{path}")
        named = (module_name, path) in self.allow
        star = (module_name, "*") in self.allow and "." not in path and path[0] != "_"
        if named or star:
            module = importlib.import_module(module_name)  # the operator named it
        else:
            module = sys.modules.get(module_name)  # type: ignore[assignment]
            if module is None:
                raise SpawnRefused(
                    f"module {module_name!r} is not loaded on node {nodeid}: a node imports "
                    "no module for another node (load it with a service, or list the "
                    "function in spawn_allow)"
                )
        obj = _walk(module, path)
        if obj is None:
            pass
        elif named and callable(obj):
            return obj  # type: ignore[no-any-return]
        elif star and inspect.isfunction(obj) and obj.__module__ == module_name:
            return obj
        elif is_spawnable(obj):
            return obj  # type: ignore[no-any-return]
        raise SpawnRefused(
            f"{show(target)} is not marked spawnable and not in spawn_allow on node {nodeid} "
            f"(mark the function @aemp.spawnable, or add {show(f'{module_name}:{path}')} to "
            "that node's spawn_allow)"
        )


def _walk(module: Any, path: str) -> Any:
    """The object at a dotted path from a module, through classes only; else None.

    Static lookups: no property, descriptor or module __getattr__ runs.
    """
    obj = module
    for part in path.split("."):
        if obj is not module and not isinstance(obj, type):
            return None  # never into another module, nor into an instance
        owner, obj = obj, inspect.getattr_static(obj, part, None)
        if isinstance(obj, staticmethod):
            obj = obj.__func__
        elif isinstance(obj, classmethod):
            # bound here: classmethod.__get__ would run a wrapped property (3.9-3.12)
            inner = obj.__func__
            obj = types.MethodType(inner, owner) if inspect.isfunction(inner) else None
    return obj


class SpawnBook:
    """The names spawn requests took on this node, and why recent ones failed."""

    __slots__ = ("deaths", "marks", "reserved")

    def __init__(self, reserved: tuple[str, ...]) -> None:
        self.reserved = reserved  # this node's own name prefixes
        self.marks: dict[str, tuple[str, str]] = {}  # prefix -> (its node, highest counter)
        self.deaths: dict[str, tuple[str, tuple[Any, ...]]] = {}  # name -> (node, reason)

    def take(self, name: str, nodeid: str) -> tuple[bool, str | None]:
        """Take a name for a port that node `nodeid` spawns: (taken, why not).

        When not taken, the second value says why; it is None when the
        name is not this spawn's to report on (it may name a port that
        lived here, or one of this node's own), else it is the reason the
        spawner's monitor should get.
        """
        if len(name) > MAX_SPAWN_NAME:
            return False, f"port name {name[:20]!r}... is longer than {MAX_SPAWN_NAME}"
        if not name.isprintable() or " " in name or ";" in name:
            # check_port_id refuses such an ID, and a log line would show it raw
            return False, f"port name {show(name)} has a character a port ID cannot hold"
        if name.startswith(self.reserved):
            return False, None
        prefix = name.rstrip(string.ascii_lowercase)
        counter = name[len(prefix) :]
        if not counter:
            return False, f"port name {name!r} does not end in a counter (a, b, ..., aa, ...)"
        seen = self.marks.get(prefix)
        if seen is None:
            if len(self.marks) >= MAX_SPAWN_PREFIXES:
                return False, f"this node took names of {MAX_SPAWN_PREFIXES} spawners already"
        else:
            owner, mark = seen
            if owner != nodeid:
                return False, None  # another node's names: not this one's to report on
            if len(counter) < len(mark) or (len(counter) == len(mark) and counter <= mark):
                return False, None
        self.marks[prefix] = (nodeid, counter)
        return True, None

    def died(self, name: str, reason: tuple[Any, ...], nodeid: str | None = None) -> None:
        """The spawn of `name` by `nodeid` (default: the node that took the name)
        was refused, or its port died in its init, with reason."""
        if nodeid is None:
            seen = self.marks.get(name.rstrip(string.ascii_lowercase))
            nodeid = seen[0] if seen is not None else ""  # "": this node's own spawn
        deaths = self.deaths
        deaths.pop(name, None)
        if len(deaths) >= MAX_SPAWN_DEATHS:
            del deaths[next(iter(deaths))]
        text = tuple(r[:MAX_DEATH_TEXT] if isinstance(r, str) else r for r in reason[:2])
        deaths[name] = (nodeid, text)

    def death(self, name: str, nodeid: str) -> tuple[Any, ...] | None:
        """Why the spawn of `name` failed, if node `nodeid` asked for it; else None."""
        seen = self.deaths.get(name)
        return seen[1] if seen is not None and seen[0] == nodeid else None


class Spawner:
    """A node's spawn: spawn() of its own code, and the spawn request of other nodes.

    A spawned port is a gated port of the kernel: what is sent to it waits
    until its init function has run (or, for an async one, ended).
    """

    __slots__ = ("_kernel", "_names", "_prefix", "book", "policy")

    def __init__(self, kernel: Kernel, secure: bool, allow: Iterable[str] | None) -> None:
        self._kernel = kernel
        self.policy = SpawnPolicy(secure, allow)
        self.book = SpawnBook(kernel.prefixes)
        self._prefix = kernel.id + "#"
        self._names = counter_names(f"{self._prefix}{kernel.prefixes[1]}")
        kernel.handle(SPAWN, self._request)
        kernel.handle(SPAWN_LINKED, self._request_linked)

    def spawn(self, node: str, target: str, args: tuple[Any, ...], link: str | None = None) -> str:
        """Node.spawn: start target(*args) on `node` in a new port; its ID.

        With `link` (a port or node ID), the new port dies when `link`
        dies or its node is lost (lowlevel.spawn_linked).
        """
        kernel = self._kernel
        kernel.check_open()
        parse_spawn_target(target)
        check_message((target, *args))
        node_id = node.partition("#")[0] if isinstance(node, str) else node
        check_port_id(node_id)
        if link is not None:
            check_port_id(link)
        pid = next(self._names)
        name = pid[len(self._prefix) :]
        if node_id != kernel.id:
            if link is None:
                kernel.request(node_id, SPAWN, name, target, *args)
            else:
                kernel.request(node_id, SPAWN_LINKED, name, link, target, *args)
            return f"{node_id}#{name}"
        self._start(pid, target, args, link)
        return pid

    def take_name(self) -> str:
        """Take the port ID the next spawn would have (it never will)."""
        return next(self._names)

    def _request(self, sender: str | None, name: Any, target: Any, *args: Any) -> None:
        """A spawn request to the node port, from `sender` (None: sent by this node)."""
        self._requested(sender, name, target, args, None)

    def _request_linked(
        self, sender: str | None, name: Any, link: Any, target: Any, *args: Any
    ) -> None:
        """A linked spawn request: a spawn request with the link port before the target."""
        if type(link) is not str:
            raise TypeError(f"expected a link port ID, got {link!r:.60}")
        check_port_id(link)  # InvalidID, a ValueError: logged as a malformed request
        self._requested(sender, name, target, args, link)

    def _requested(
        self, sender: str | None, name: Any, target: Any, args: tuple[Any, ...], link: str | None
    ) -> None:
        """Start what a spawn request asks for, if it may.

        The name must be new (see the top of this module), and the function
        one the spawn policy allows, whoever sent the request: this node's
        own code spawns with spawn(), so a request that it sent to its own
        node port was a reply or relay that another node built. A refusal
        is remembered, so that the spawner's monitor learns the reason.
        """
        if type(name) is not str or "#" in name:
            raise TypeError(f"expected a port name, got {name!r}")
        who = sender if sender is not None else self._kernel.id
        taken, why = self.book.take(name, who)
        if not taken:
            log.warning("node %s: refused spawn of %s as %r from %s: %s", self._kernel.id,
                        show(target), name, who, why or "the name was taken before")  # fmt: skip
            if why is not None:
                self.book.died(name, ("die", f"SpawnRefused: {why}"), who)
            return
        try:
            init = self.policy.resolve(target, self._kernel.id)
        except (Exception, SystemExit) as e:  # an allowed module may exit on import
            log.warning("node %s: refused spawn of %s from %s: %s: %s", self._kernel.id,
                        show(target), who, type(e).__name__, e)  # fmt: skip
            self.book.died(name, die_reason(e), who)
            return
        self._start(self._prefix + name, init, args, link)

    def _start(
        self, pid: str, init: Callback | str, args: tuple[Any, ...], link: str | None = None
    ) -> None:
        kernel = self._kernel
        kernel.gated_port(pid)
        if link is not None:
            self._link(pid, link)
        kernel.post(kernel.release, pid, self._init, pid, init, tuple(args))

    def _link(self, pid: str, link: str) -> None:
        """Kill `pid` when `link` dies (with its reason, a normal exit too)."""
        kernel = self._kernel
        token = SELF.set(None)  # monitors of no port: nothing of the caller's dies with them
        try:
            on_link = kernel.mon(link, lambda *reason: kernel.kil(pid, *reason))
            kernel.mon(pid, lambda *reason: on_link.cancel())
        finally:
            SELF.reset(token)

    def _init(self, pid: str, init: Callback | str, args: tuple[Any, ...]) -> Any:
        """Run in the new port's context; a failure is remembered as one of the init."""
        try:
            r = (resolve_spawn_target(init) if isinstance(init, str) else init)(*args)
        except Exception as e:
            self.book.died(pid[len(self._prefix) :], die_reason(e))
            raise
        if r is not None and inspect.isawaitable(r):
            return self._awaited(pid, r)
        return None

    async def _awaited(self, pid: str, init: Any) -> Any:
        """An async init: its failure is remembered as one of the init."""
        try:
            return await init
        except Exception as e:
            self.book.died(pid[len(self._prefix) :], die_reason(e))
            raise
