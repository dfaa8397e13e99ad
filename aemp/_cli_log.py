# The aemp command's `log`: the log of the whole network, from aemp.logcatch.
#
# Like snd and cal, it joins the network as a short-lived anonymous node
# through the seeds of profile "aemp" (or the default section), but this
# one listens (--bind, default *:0): every forwarding node sends its
# records to it directly, and a node that listens nowhere cannot be
# dialled. It registers a LogCatcher. Without --follow it asks the
# database which nodes forward, waits (bounded by --timeout) until each has
# handed over the records it kept while no catcher was there (its log_sync
# message), prints them in time order and ends; with --follow it prints
# each record as it comes until SIGINT or SIGTERM (or an explicit
# --timeout).

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from ._addr import parse_bind
from ._cli_base import Command, Failure, Session, Usage
from ._cli_net import DEFAULT_TIMEOUT, G_NET, _aemp_run, _anon_keys, _failure, _Logging
from ._errors import AempError


def _options(s: Session) -> tuple[int, tuple[str, ...], list[str]]:
    from .logcatch import parse_level

    level = 0
    if "--level" in s.options:
        try:
            level = parse_level(str(s.options["--level"]))
        except AempError as e:
            raise Usage(f"log: --level: {e}") from None
    loggers: tuple[str, ...] = ()
    if "--logger" in s.options:
        loggers = tuple(n for n in str(s.options["--logger"]).split(",") if n)
    bind = str(s.options.get("--bind", "*:0"))
    try:
        parse_bind(bind)
    except AempError as e:
        raise Usage(f"log: --bind: {e}") from None
    return level, loggers, [bind]


def _show(entry: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(entry.as_dict(), ensure_ascii=False), flush=True)
    else:
        print(entry.format(), flush=True)


def _log(s: Session, args: list[Any]) -> int:
    level, loggers, binds = _options(s)
    follow = bool(s.options.get("--follow"))
    as_json = bool(s.options.get("--json"))
    keys = {**_anon_keys(s), "binds": binds}
    limit = s.timeout if s.timeout is not None else DEFAULT_TIMEOUT

    async def main() -> int:
        from . import Node
        from .logcatch import LogCatcher, forwarders

        async with Node(**keys) as node:
            catcher = LogCatcher(level=level, loggers=loggers, node=node)
            if follow:
                return await _follow(catcher, as_json, s.timeout)
            nodes = await forwarders(node, timeout=limit)
            if not nodes:
                print(
                    "aemp: log: no node forwards its log (give them the service "
                    "'aemp.logcatch:forward')",
                    file=sys.stderr,
                )
                return 0
            missing = await catcher.wait_synced(nodes, limit)
            for entry in sorted(catcher.take(), key=lambda e: e.time):
                _show(entry, as_json)
            if missing:
                names = ", ".join(sorted(missing))
                print(
                    f"aemp: log: no records from {len(missing)} forwarding node(s) within "
                    f"{limit:g} s: {names}",
                    file=sys.stderr,
                )
                return 1
            return 0

    with _Logging(s.verbose, logging.ERROR) as logs:
        try:
            return _aemp_run(main())
        except (Failure, BrokenPipeError):
            raise
        except (AempError, OSError, TimeoutError) as e:
            raise _failure("log", "the global nodes", e, logs, limit) from None


async def _follow(catcher: Any, as_json: bool, total: float | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(total):  # only an explicit --timeout ends it
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    it = aiter(catcher)
                    while True:
                        nxt = asyncio.ensure_future(anext(it))
                        await asyncio.wait([nxt, stopping], return_when=asyncio.FIRST_COMPLETED)
                        if not nxt.done():
                            nxt.cancel()
                            break
                        try:
                            entry = nxt.result()
                        except StopAsyncIteration:
                            break
                        _show(entry, as_json)
                finally:
                    stopping.cancel()
        return 0
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        catcher.cancel()


COMMANDS: list[Command] = [
    Command(
        "log",
        "",
        "show the log of every node that forwards it (aemp.logcatch); --follow for more",
        _log,
        G_NET,
        "Joins the network as an anonymous node that listens on --bind HOST:PORT (default "
        "*:0, so that the forwarding nodes can reach it) and catches the log records of "
        "every node that runs aemp.logcatch.forward (the service 'aemp.logcatch:forward'). "
        "Without --follow it prints what each of them kept while no catcher was there (at "
        "most its buffer, 1000 records by default), in time order, and ends: exit status 1 "
        "if a forwarding node did not hand its records over within --timeout SECONDS "
        f"(default {DEFAULT_TIMEOUT:g}); when no node forwards, a note on stderr says so "
        "(exit status 0). With --follow it goes on printing each record as "
        "it comes, until SIGINT or SIGTERM (exit status 0), or an explicit --timeout. "
        "--level L (a name such as WARNING, or a number) and --logger NAME[,NAME...] (and "
        "their children) choose the records; the nodes send no others. --json prints one "
        'JSON object per record: {"node", "time", "level", "logger", "message", "exc"}. '
        "The seeds and the secret or certificate come from profile 'aemp', else the "
        "default section.",
        nargs=None,
        nmax=0,
        final=True,
        timeout=True,
        flags=("--follow", "--json", "--level L", "--logger NAMES", "--bind HOST:PORT"),
    ),
]
