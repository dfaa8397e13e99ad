# eg/diskd.py: App::Diskd on aemp: which disk is attached to which machine (docs/diskd.md).
# On each machine of one LAN segment:  python eg/diskd.py        (Ctrl-C to stop)
# Then, on any of them:                python eg/diskd.py list
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aemp
from aemp import control, lowlevel

FAMILY = "diskd"  # subkey: the node ID; value: {"host", "disks", "problem"}
CHANNEL = "multicast:239.255.65.77:4044"
COLUMNS = "NAME,SIZE,TYPE,MOUNTPOINTS"  # MOUNTPOINTS: util-linux 2.37 or newer
OLD_COLUMNS = "NAME,SIZE,TYPE,MOUNTPOINT"  # before: one mount point per device
MAX_DEVICES = 1000  # more than this in one answer is garbage, not disks
ASK = 10.0  # seconds `list` waits for a node's answer
MAX_LOG = 200  # characters of a bad answer quoted in the log
MAX_SAID = 10  # distinct problems logged while the disks cannot be read

log = logging.getLogger("diskd")
Disk = dict[str, Any]  # {"name", "size", "type", "mountpoints", "mounted"}


class Unreadable(Exception):
    """The disks could not be read this time: said once in the log, tried again later."""


def parse(raw: bytes) -> list[Disk]:
    """`lsblk --json --bytes` output as a flat list of disks and partitions."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be disks
        raise Unreadable(f"lsblk's answer is not JSON: {raw[:MAX_LOG]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("blockdevices"), list):
        raise Unreadable(f'lsblk\'s answer has no "blockdevices" list: {raw[:MAX_LOG]!r}')
    disks: list[Disk] = []

    def walk(devices: list[Any], depth: int) -> None:
        for dev in devices:
            if len(disks) >= MAX_DEVICES or depth > 8:
                raise Unreadable(f"lsblk's answer has more than {MAX_DEVICES} devices")
            if not isinstance(dev, dict) or not isinstance(dev.get("name"), str):
                raise Unreadable(f"lsblk's answer has a device without a name: {dev!r:.{MAX_LOG}}")
            size = dev.get("size")
            if isinstance(size, str) and size.isdigit():  # older lsblk: numbers as strings
                size = int(size)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise Unreadable(f"lsblk's answer has a bad size for {dev['name']!r}: {size!r}")
            points = dev.get("mountpoints", [dev.get("mountpoint")])
            if not isinstance(points, list) or not all(
                p is None or isinstance(p, str) for p in points
            ):
                raise Unreadable(f"lsblk's answer has bad mount points for {dev['name']!r}")
            mounted = sorted({p for p in points if p})
            kind = dev.get("type")
            disks.append(
                {
                    "name": dev["name"],
                    "size": size,
                    "type": kind if isinstance(kind, str) else "",
                    "mountpoints": mounted,
                    "mounted": bool(mounted),
                }
            )
            children = dev.get("children", [])
            if not isinstance(children, list):
                raise Unreadable(f"lsblk's answer has bad children for {dev['name']!r}")
            walk(children, depth + 1)

    walk(doc["blockdevices"], 0)
    return disks


async def run_lsblk(timeout: float, columns: str = COLUMNS) -> list[Disk]:  # noqa: ASYNC109
    """Run lsblk in a subprocess: the loop goes on while it runs; killed after `timeout`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "lsblk", "--json", "--bytes", "--output", columns,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError:
        raise Unreadable("there is no lsblk command (util-linux) on PATH") from None
    except OSError as e:
        raise Unreadable(f"lsblk cannot be started: {e}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Unreadable(f"lsblk gave no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()[:MAX_LOG]
        if columns == COLUMNS and "unknown column" in text and "MOUNTPOINTS" in text:
            return await run_lsblk(timeout, OLD_COLUMNS)  # an lsblk older than 2.37
        raise Unreadable(f"lsblk failed with status {proc.returncode}: {text or '(no message)'}")
    return parse(out)


def fake_source(path: Path) -> Callable[[], Awaitable[list[Disk]]]:
    """Disks read from a file holding what `lsblk --json --bytes` prints (for tests)."""

    async def read() -> list[Disk]:
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except OSError as e:
            raise Unreadable(f"cannot read {path}: {e.strerror}") from None
        return parse(raw)

    return read


async def gather(
    node: aemp.Node, source: Callable[[], Awaitable[list[Disk]]], interval: float
) -> None:
    """Read the disks every `interval` seconds and publish them when they change."""
    host = socket.gethostname()
    disks: list[Disk] = []
    problem: str | None = None
    said: set[str] = set()  # the problems logged since the disks were last read
    published: Any = None
    while True:
        try:
            disks = await source()
        except Unreadable as e:
            problem = str(e)
            if problem not in said and len(said) < MAX_SAID:  # once each, not once per try
                said.add(problem)
                more = "" if len(said) < MAX_SAID else " (no other problem is logged until then)"
                log.warning("%s; trying again every %g s%s", problem, interval, more)
        else:
            if problem is not None:
                log.warning("the disks are read again (%d of them)", len(disks))
            problem = None
            said.clear()
        value = {"host": host, "disks": disks, "problem": problem}
        if value != published:
            node.db_set(FAMILY, node.id, value)
            published = value
        await asyncio.sleep(interval)


async def daemon(args: argparse.Namespace) -> None:
    discovery = args.discovery or ([] if args.no_discovery or args.seed else [CHANNEL])
    keys: dict[str, Any] = {
        "binds": [args.bind],
        "seeds": args.seed,
        "discovery": discovery,
        "secret": args.secret,
        "network": "diskd",
        "control": True,  # `list` asks this node through its control socket
    }
    if args.nodeid:
        keys["nodeid"] = args.nodeid
    node = await aemp.configure("diskd", **keys)
    source = fake_source(Path(args.fake)) if args.fake else lambda: run_lsblk(args.timeout)
    print(f"diskd: node {node.id} is up, listening on {', '.join(node.listeners)}", flush=True)
    async with node:
        stop = asyncio.Event()
        lowlevel.on_close(node, stop.set)  # `aemp stop NODE`, through the control socket
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        reader = lowlevel.spawn_task(node, gather(node, source, args.interval))
        await asyncio.wait(
            [reader, asyncio.ensure_future(stop.wait())], return_when="FIRST_COMPLETED"
        )
        if reader.done() and not reader.cancelled():
            reader.result()  # a bug of gather(): raised, the daemon ends
        server = await control.serve(node) if node.config.control else None
        if (
            server is not None and server.stopping
        ):  # `aemp stop`: let the node finish closing and answer first
            async with asyncio.timeout(10):
                await server.stopped.wait()


def size(n: int) -> str:
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in ("K", "M", "G", "T"):
        value /= 1024
        if value < 1024 or unit == "T":
            break
    return f"{value:.1f}{unit}"


async def find_daemon(nodeid: str | None) -> tuple[str, dict[str, Any]]:
    """The local diskd node (the one named, or the first that publishes its disks)
    and the family it sees; ControlError if there is none."""
    if nodeid is not None:
        async with await control.connect(nodeid) as c, asyncio.timeout(ASK):
            return nodeid, await c.request("db", family=FAMILY)
    for info in await control.local_nodes():
        if info.get("nodeid") is None:
            continue
        try:
            async with await control.connect(info["nodeid"]) as c, asyncio.timeout(ASK):
                family = await c.request("db", family=FAMILY)
        except (control.ControlError, aemp.AempError, TimeoutError):
            continue
        if info["nodeid"] in family:
            return info["nodeid"], family
    raise control.ControlError(
        f"no diskd node runs on this host (none in {control.runtime_dir()}): "
        "start one with: python eg/diskd.py",
        "no_node",
    )


async def list_disks(args: argparse.Namespace) -> int:
    try:
        asked, family = await find_daemon(args.node)
    except (control.ControlError, aemp.AempError) as e:
        print(f"diskd: {e}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"diskd: node {args.node} gave no answer within {ASK:g} s", file=sys.stderr)
        return 1
    rows = [("MACHINE", "HOST", "DISK", "SIZE", "MOUNTED", "MOUNTPOINTS")]
    notes = []
    for machine in sorted(family):
        value = family[machine]
        if not isinstance(value, dict) or not isinstance(value.get("disks"), list):
            notes.append(f"{machine}: an entry that is not diskd's: {value!r:.80}")
            continue
        if value.get("problem"):
            notes.append(f"{machine}: {value['problem']} (its disks as last read)")
        for d in value["disks"]:
            points = " ".join(d["mountpoints"]) or "-"
            mounted = "yes" if d["mounted"] else "no"
            rows.append((machine, value["host"], d["name"], size(d["size"]), mounted, points))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    for note in notes:
        print(f"note: {note}")
    n, m = len(rows) - 1, len(family)
    print(f"({n} disk{'s' * (n != 1)} on {m} machine{'s' * (m != 1)}, as {asked} sees them)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="Which disk is attached to which machine.")
    p.add_argument("command", nargs="?", choices=["run", "list"], default="run",
                   help="run: the daemon (the default); list: ask the local daemon")  # fmt: skip
    env = os.environ.get
    p.add_argument("--secret", default=env("AEMP_SECRET", "tutorial-secret"))
    p.add_argument("--bind", default=env("DISKD_BIND", "*:4041"), help="default *:4041")
    p.add_argument("--seed", action="append", default=[], help="a seed's address (repeatable)")
    p.add_argument("--discovery", action="append", default=[],
                   help=f"a discovery channel (default {CHANNEL}, unless --seed)")  # fmt: skip
    p.add_argument("--no-discovery", action="store_true", help="seeds only, no multicast")
    p.add_argument("--nodeid", help="the node ID (default: diskd/ and a random string)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between two reads")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds lsblk may take")
    p.add_argument("--fake", default=env("DISKD_FAKE"),
                   help="read lsblk's JSON from this file instead (for tests)")  # fmt: skip
    p.add_argument("--node", help="list: the local node to ask (default: the diskd one)")
    args = p.parse_args()
    if args.interval <= 0 or args.timeout <= 0:
        p.error("--interval and --timeout must be above 0")
    if args.command == "list":
        return aemp.run(list_disks(args))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        aemp.run(daemon(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
