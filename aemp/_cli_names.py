# The aemp command's name leases: `aemp names list [FAMILY]`, `names release
# FAMILY NAME` and `names reset` (which asks first, unless --yes).
#
# The backend is --url, else the configuration key names_url of the
# profile (default aemp://). An aemp:// URL works through the short-lived
# anonymous node of _cli_net, whose master must serve the lease table
# (aemp.names.serve on the global nodes); other URLs need no node.

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from ._cli_base import Command, Failure, Session, Usage, need_str
from ._cli_net import ANON_PROFILE, DEFAULT_TIMEOUT, G_NET, _aemp_run, _talk
from ._config import resolve_keys
from ._errors import AempError

SUBCOMMANDS = {"list": (0, 1), "release": (2, 2), "reset": (0, 0)}


def _url(s: Session) -> str:
    url = s.options.get("--url")
    if isinstance(url, str):
        return url
    try:
        keys = resolve_keys(s.data, s.target or ANON_PROFILE, {}, path=s.path)
    except AempError as e:
        raise Failure(str(e)) from None
    return str(keys.get("names_url", "aemp://"))


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _work(manager: Any, sub: str, args: list[str]) -> int:
    if sub == "list":
        listed = await manager.list(args[0] if args else None)
        for n in listed:
            state = "free" if n.free else "held"
            print(f"{n.family} {n.name} {state} token={n.token} updated={_when(n.updated_at)}")
    elif sub == "release":
        await manager.release(args[0], args[1])
    else:
        await manager.reset()
    return 0


def _names(s: Session, args: list[Any]) -> int:
    from . import names

    sub = need_str("names", "SUBCOMMAND", args[0])
    if sub not in SUBCOMMANDS:
        raise Usage(f"names: unknown subcommand {sub!r}: expected list, release or reset")
    rest = [need_str(f"names {sub}", "FAMILY or NAME", a) for a in args[1:]]
    low, high = SUBCOMMANDS[sub]
    if not low <= len(rest) <= high:
        want = {"list": "[FAMILY]", "release": "FAMILY NAME", "reset": "nothing"}[sub]
        raise Usage(f"names {sub}: expected {want} (got {len(rest)} arguments)")
    url = _url(s)
    if sub == "reset" and not s.options.get("--yes"):
        sys.stderr.write(f"names reset: forget every name at {url}? type 'yes': ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip() if sys.stdin and not sys.stdin.closed else ""
        if answer != "yes":
            raise Failure("names reset: not confirmed (type 'yes', or pass --yes)")
    timeout = s.timeout if s.timeout is not None else DEFAULT_TIMEOUT

    if url.startswith("aemp://"):

        async def on_node(node: Any, limit: float) -> int:
            async with await names.open(url, node=node) as m:
                return await _work(m, sub, rest)

        return _talk(s, f"names {sub}", "the global nodes", on_node)

    async def alone() -> int:
        import asyncio

        async with await names.open(url) as m:
            async with asyncio.timeout(timeout):
                return await _work(m, sub, rest)

    try:
        return _aemp_run(alone())
    except (AempError, OSError, TimeoutError) as e:
        raise Failure(f"names {sub}: {e or type(e).__name__}") from None


COMMANDS = [
    Command(
        "names",
        "list [FAMILY] | release FAMILY NAME | reset",
        "list, release or reset name leases (aemp.names)",
        _names,
        G_NET,
        "list prints one line per name known (free or held): family, name, 'held' or "
        "'free', its last fencing token and when it was last acquired (UTC). release frees "
        "a name whoever holds it (its holder hears of it at its next renewal). reset "
        "forgets every name and asks for 'yes' on stdin first unless --yes is given. "
        "--url URL chooses the backend (aemp://, etcd://host:port[,...][/prefix]); without "
        "it the profile's names_url key (default aemp://). aemp:// asks the global nodes "
        "through an anonymous node, as 'aemp nodes' does.",
        nargs=None,
        nmin=1,
        nmax=3,
        final=True,
        timeout=True,
        flags=("--url URL", "--yes"),
        expects="list, release or reset",
    ),
]
