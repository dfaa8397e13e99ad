# The spelling of spawn targets and spawn_allow entries: syntax only.
#
# A leaf, so that the configuration can check spawn_allow without the
# spawn layer; what a target may run is decided in aemp/_spawn.py.
#
# May import only aemp._errors and the standard library.

from __future__ import annotations

import re

from ._errors import SpawnError

MAX_SHOWN = 100  # characters of a target shown in an error message or log

_IDENT = r"[A-Za-z_]\w*"
_SPAWN_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
_PERL_SPAWN_RE = re.compile(rf"{_IDENT}(::{_IDENT})+\Z")
_ALLOW_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:(\*|{_IDENT}(\.{_IDENT})*)\Z")
_PERL_ALLOW_RE = re.compile(rf"{_IDENT}(::{_IDENT})*::(\*|{_IDENT})\Z")
_MODULE_RE = re.compile(rf"({_IDENT}(\.{_IDENT})*?)(\.\*|::\*)?\Z")


def show(target: object) -> str:
    """repr(target) for a message, cut to MAX_SHOWN characters: a peer chooses it."""
    text = repr(target)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}..."


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
        f"spawn target {show(target)} is not valid: expected 'package.module:function' "
        "(or 'package::module::function')"
    )


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
    hint = ""
    m = _MODULE_RE.match(entry) if isinstance(entry, str) else None
    if m:  # a module name, as spawn_allow took before, or "mod.*"
        hint = f"; for the functions defined in module {m[1]!r}, write '{m[1]}:*'"
    raise SpawnError(
        f"spawn_allow entry {show(entry)} is not valid: expected 'package.module:function', "
        f"'package.module:*' (the functions defined in that module) or '*' (anything){hint}"
    )
