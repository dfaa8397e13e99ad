# Spawn: finding the function a spawn names, deciding whether a request
# from another node may run it, and keeping spawned port names unique.
#
# What may run (DESIGN section 6). Code of this node spawns whatever it
# names: it could call the function itself. A spawn request from another
# node runs a function only if the function is marked with @spawnable or a
# spawn_allow entry names it: "pkg.mod:func" that function, "pkg.mod:*" the
# plain functions defined in pkg.mod (not those it imports), "*" anything.
# A peer never makes the node import a module: a marked function counts
# once its module is loaded (by the node's own code or a service), and only
# an allow-list entry lets a request import the module it names, because
# importing runs the module's code (venv's __main__ makes directories, for
# one). The path after the colon reaches through classes only, never into
# another module, so "allowed:os.system" is no way to os.system.
#
# Which name a spawned port may take (guarantee 4). The spawner names the
# port, as AnyEvent::MP's protocol has it, so the node checks that the name
# never lived here: it must be a prefix plus a counter of lower-case
# letters (a, ..., z, aa, ... as aemp and AnyEvent::MP count), and the
# counter must be above every one seen with that prefix. Names with this
# node's own prefixes are never taken by a request. The high-water marks of
# at most MAX_SPAWN_PREFIXES prefixes are kept; past that a new prefix is
# refused, since forgetting one would let its old names live again.
#
# Why a spawn failed. A spawner sends its mon1 right behind the spawn
# request; when the spawn was refused or its init failed before the mon1
# arrived, there is no port left to watch. The last MAX_SPAWN_DEATHS such
# reasons are kept by name, and the mon1 gets the real reason instead of
# no_such_port.

from __future__ import annotations

import importlib
import inspect
import re
import string
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._errors import SpawnError, SpawnRefused

Callback = Callable[..., Any]
F = TypeVar("F")

MAX_SPAWN_PREFIXES = 65_536  # spawner prefixes (one per spawning node's run) remembered
MAX_SPAWN_NAME = 128  # characters in a spawned port's name
MAX_SPAWN_DEATHS = 1024  # recent reasons of spawns that failed at once, for a late mon1
MAX_DEATH_TEXT = 400  # characters of such a reason's text that are kept

_MARK = "__aemp_spawnable__"
_IDENT = r"[A-Za-z_]\w*"
_SPAWN_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
_PERL_SPAWN_RE = re.compile(rf"{_IDENT}(::{_IDENT})+\Z")
_ALLOW_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:(\*|{_IDENT}(\.{_IDENT})*)\Z")
_PERL_ALLOW_RE = re.compile(rf"{_IDENT}(::{_IDENT})*::(\*|{_IDENT})\Z")


def spawnable(fn: F) -> F:
    """Mark a function as one that other nodes may start with ``spawn``.

    Use it on module-level functions (plain or ``async def``). On a
    ``staticmethod`` or ``classmethod`` (in either order of decorators) it
    marks the function inside. Returns its argument unchanged.
    """
    inner = fn.__func__ if isinstance(fn, staticmethod | classmethod) else fn
    if not inspect.isfunction(inner):
        raise TypeError(
            f"@spawnable marks functions (def or async def), got {fn!r}, a {type(fn).__name__}"
        )
    setattr(inner, _MARK, True)
    return fn


def is_spawnable(obj: object) -> bool:
    """True for a function marked with @spawnable (or a method of one)."""
    if inspect.ismethod(obj):
        obj = obj.__func__
    return inspect.isfunction(obj) and obj.__dict__.get(_MARK) is True


def parse_spawn_target(target: object) -> tuple[str, str]:
    """Split "pkg.mod:func" (or Perl's "pkg::mod::func") into module and function."""
    if isinstance(target, str):
        if _SPAWN_RE.match(target):
            module, _, func = target.partition(":")
            return module, func
        if _PERL_SPAWN_RE.match(target):
            module, _, func = target.rpartition("::")
            return module.replace("::", "."), func
    raise SpawnError(
        f"spawn target {target!r} is not valid: expected 'package.module:function' "
        "(or 'package::module::function')"
    )


def resolve_spawn_target(target: str) -> Callback:
    """The function a target names, importing its module: for this node's own code."""
    module_name, func_path = parse_spawn_target(target)
    obj: Any = importlib.import_module(module_name)
    for part in func_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpawnError(f"spawn target {target!r} names a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def check_spawn_allow(entry: object) -> tuple[str, str]:
    """One spawn_allow entry as (module, function path or "*"); ("*", "*") for everything."""
    if entry == "*":
        return "*", "*"
    if isinstance(entry, str):
        if _ALLOW_RE.match(entry):
            module, _, func = entry.partition(":")
            return module, func
        if _PERL_ALLOW_RE.match(entry):
            module, _, func = entry.rpartition("::")
            return module.replace("::", "."), func
    raise SpawnError(
        f"spawn_allow entry {entry!r} is not valid: expected 'package.module:function', "
        "'package.module:*' (the functions defined in that module) or '*' (anything)"
    )


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
        if named or ((module_name, "*") in self.allow and "." not in path):
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
            raise SpawnRefused(f"{target!r} is not marked spawnable and not in spawn_allow")
        if named and callable(obj):
            return obj  # type: ignore[no-any-return]
        if (
            (module_name, "*") in self.allow
            and inspect.isfunction(obj)
            and obj.__module__ == module_name
        ):
            return obj
        if is_spawnable(obj):
            return obj  # type: ignore[no-any-return]
        raise SpawnRefused(f"{target!r} is not marked spawnable and not in spawn_allow")


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
            obj = obj.__get__(None, owner)
    return obj


class SpawnBook:
    """The names spawn requests took on this node, and why recent ones failed."""

    __slots__ = ("deaths", "marks", "reserved")

    def __init__(self, reserved: tuple[str, ...]) -> None:
        self.reserved = reserved  # this node's own name prefixes
        self.marks: dict[str, str] = {}  # prefix -> highest counter taken
        self.deaths: dict[str, tuple[Any, ...]] = {}  # name -> reason, oldest first

    def take(self, name: str) -> tuple[bool, str | None]:
        """Take a name for a port a request spawns: (taken, why not).

        When not taken, the second value says why; it is None when the
        name is not this spawn's to report on (it may name a port that
        lived here, or one of this node's own), else it is the reason the
        spawner's monitor should get.
        """
        if len(name) > MAX_SPAWN_NAME:
            return False, f"port name {name[:20]!r}... is longer than {MAX_SPAWN_NAME}"
        if name.startswith(self.reserved):
            return False, None
        prefix = name.rstrip(string.ascii_lowercase)
        counter = name[len(prefix) :]
        if not counter:
            return False, f"port name {name!r} does not end in a counter (a, b, ..., aa, ...)"
        mark = self.marks.get(prefix)
        if mark is None:
            if len(self.marks) >= MAX_SPAWN_PREFIXES:
                return False, f"this node took names of {MAX_SPAWN_PREFIXES} spawners already"
        elif len(counter) < len(mark) or (len(counter) == len(mark) and counter <= mark):
            return False, None
        self.marks[prefix] = counter
        return True, None

    def died(self, name: str, reason: tuple[Any, ...]) -> None:
        """A spawn was refused, or its port died in its init, with reason."""
        deaths = self.deaths
        deaths.pop(name, None)
        if len(deaths) >= MAX_SPAWN_DEATHS:
            del deaths[next(iter(deaths))]
        deaths[name] = tuple(r[:MAX_DEATH_TEXT] if isinstance(r, str) else r for r in reason[:2])

    def death(self, name: str) -> tuple[Any, ...] | None:
        return self.deaths.get(name)
