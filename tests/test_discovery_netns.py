"""Discovery on real multicast, between network namespaces the tests make.

tests/netns.py makes the namespaces: a bridge, and each node's namespace
joined to it by a veth pair (eth0 inside, 10.77.0.N/24). Nodes run as
processes (tests/disc_proc.py) under ``ip netns exec``, with `discovery`
and no `seeds`. Multicast never leaves these namespaces: none of them has
a route or a link to the host's own network. Everything is deleted
afterwards, also when a test fails; without root (or without `ip netns`)
the tests are skipped, and say why in the summary.

The figure: how long from the start of three processes until each is
connected to the two others and sees all three in the database; printed
by the test (run with -s), and the closing note quotes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from conftest import until

SECRET = "netns-discovery-secret"
GROUP = "239.255.65.77"
PORT = 4044
NODES = 5  # namespaces n1..n5
LAN = netns.Lan("", NODES)
PREFIX = LAN.prefix
PROC = Path(__file__).resolve().parent / "disc_proc.py"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lan() -> Iterator[None]:
    with netns.made(LAN, "the multicast discovery tests"):
        yield


class NodeProc:
    """tests/disc_proc.py in namespace n<i>; killed by its PID only."""

    def __init__(self, i: int, proc: asyncio.subprocess.Process) -> None:
        self.i = i
        self.nodeid = f"n{i}"
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(json.loads(line))

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {"up": [], "db": [], "stats": {}, "peers": []}

    def first(self, cond: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((line for line in self.lines if cond(line)), None)

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        await self.proc.wait()
        await self.reader


def keys(i: int, **more: Any) -> dict[str, Any]:
    # n1 names its interface, the others give its address: both forms run
    interface = "eth0" if i == 1 else f"10.77.0.{i}"
    out = {
        "nodeid": f"n{i}",
        "binds": [f"10.77.0.{i}:4040"],
        "secret": SECRET,
        "network": "lab",
        "monitor_timeout": 2,
        "discovery": [f"multicast:{GROUP}:{PORT};interface={interface};interval=1;window=30"],
    }
    if i == 1:  # several channels: n1 also announces on a group nobody else joined
        out["discovery"].append(
            f"multicast:239.255.65.78:{PORT + 1};interface=eth0;ttl=2;interval=1"
        )
    out.update(more)
    return out


@pytest.fixture
async def nodes(lan: None) -> AsyncIterator[Callable[..., Any]]:
    started: list[NodeProc] = []

    async def start(i: int, **more: Any) -> NodeProc:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", f"{PREFIX}-n{i}", sys.executable, str(PROC),
            json.dumps(keys(i, **more)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        p = NodeProc(i, proc)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            await p.stop()


async def wait(cond: Callable[[], bool], limit: float, what: str, *procs: NodeProc) -> None:
    """until(), and on failure what each process saw last."""
    try:
        await until(cond, limit, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {[(p.nodeid, p.last) for p in procs]}") from None


def meshed(procs: list[NodeProc]) -> Callable[[], bool]:
    ids = sorted(p.nodeid for p in procs)

    def check() -> bool:
        return all(
            p.last["up"] == [n for n in ids if n != p.nodeid] and p.last["db"] == ids for p in procs
        )

    return check


def full(ids: list[str], me: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line["up"] == [n for n in ids if n != me] and line["db"] == ids


async def test_three_namespaces_find_each_other_and_form_mesh_and_database(
    nodes: Callable[..., Any],
) -> None:
    procs = list(await asyncio.gather(*(nodes(i) for i in (1, 2, 3))))
    await wait(meshed(procs), 20, "a full mesh of n1, n2, n3 with their database", *procs)
    ids = ["n1", "n2", "n3"]
    times = []
    for p in procs:
        line = p.first(full(ids, p.nodeid))
        assert line is not None
        times.append(line["t"])
    # every node hears the others' announcements too, and refuses none
    await wait(lambda: all(p.last["peers"] == [n for n in ids if n != p.nodeid] for p in procs),
               5, "each node hearing the two others", *procs)  # fmt: skip
    assert len(procs[0].last["stats"]["channels"]) == 2
    for p in procs:
        stats = p.last["stats"]
        assert stats["sent"] >= 1 and stats["accepted"] >= 2 and stats["own"] >= 1, stats
        for reason in ("malformed", "network", "forged", "stale", "replayed", "flood"):
            assert stats[reason] == 0, (p.nodeid, stats)
    print(f"\ndiscovery: full mesh and database of 3 namespaces {max(times):.2f} s after the "
          f"processes started (each: {', '.join(f'{t:.2f}' for t in times)} s)")  # fmt: skip


async def test_another_network_or_secret_is_never_connected(nodes: Callable[..., Any]) -> None:
    n1, n2 = await nodes(1), await nodes(2)
    other_net = await nodes(4, nodeid="n4", network="other")  # same secret
    wrong_secret = await nodes(5, nodeid="n5", secret="not-the-secret")  # same network
    await wait(meshed([n1, n2]), 20, "n1 and n2 meshed", n1, n2)

    def refused_all() -> bool:
        return all(
            p.last["stats"].get("network", 0) >= 2 and p.last["stats"].get("forged", 0) >= 2
            for p in (n1, n2)
        )

    await until(refused_all, 10, "n1 and n2 refusing n4's and n5's announcements")
    await until(lambda: other_net.last["stats"].get("network", 0) >= 2, 10, "n4 refusing")
    await until(lambda: wrong_secret.last["stats"].get("forged", 0) >= 2, 10, "n5 refusing")
    await asyncio.sleep(1.5)  # more announcements: still nothing connects
    for p in (n1, n2):
        assert p.last["up"] == [n for n in ("n1", "n2") if n != p.nodeid]
        assert p.last["peers"] == p.last["up"]
        assert all("n4" not in line["up"] and "n5" not in line["up"] for line in p.lines)
    for p in (other_net, wrong_secret):
        assert all(line["up"] == [] and line["peers"] == [] for line in p.lines), p.lines[-1]
        assert p.last["db"] == [p.nodeid]


async def test_a_killed_node_is_noticed_and_healed_when_it_starts_again(
    nodes: Callable[..., Any],
) -> None:
    procs = list(await asyncio.gather(*(nodes(i) for i in (1, 2, 3))))
    n1, n2, n3 = procs
    await wait(meshed(procs), 20, "a full mesh", *procs)
    await n2.stop(signal.SIGKILL)
    loop = asyncio.get_running_loop()
    killed = loop.time()
    await until(lambda: n1.last["up"] == ["n3"] and n3.last["up"] == ["n1"], 10, "n2 lost")
    await until(lambda: n1.last["db"] == ["n1", "n3"] and n3.last["db"] == ["n1", "n3"], 10,
                "n2's entry gone")  # fmt: skip
    noticed = loop.time() - killed
    again = await nodes(2)
    restarted = loop.time()
    await wait(meshed([n1, again, n3]), 20, "the mesh healed with the new n2", n1, again, n3)
    print(f"\ndiscovery: a SIGKILLed node noticed after {noticed:.2f} s; after its restart the "
          f"mesh and database were whole again in {loop.time() - restarted:.2f} s")  # fmt: skip


SENDER = """
import json, secrets, socket, sys, time
from aemp import wire
secret, network, group, port, count = sys.argv[1:6]
key = wire.discovery_key(secret.encode(), network)
now = time.time_ns() // 1_000_000
def ann(nodeid, ms, k=key):
    return wire.encode_announcement(k, nodeid, network, ["10.77.0.5:4999"], ms,
                                    secrets.token_hex(8))
good = ann("ghost", now)
forged = bytearray(ann("forger", now))
forged[-1] = ord("0") if forged[-1] != ord("0") else ord("1")  # still hex: a wrong tag
datagrams = [good, good, ann("old", now - 120_000), bytes(forged), b"aemp-discovery;junk"]
datagrams += [b"x" * 100] * int(count)  # a flood: a bounded number, once
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for i, d in enumerate(datagrams):
    s.sendto(d, (group, int(port)))
    if i % 20 == 19:
        time.sleep(0.001)  # paced a little, so that the receiver's buffer holds most
print(json.dumps(len(datagrams)))
"""


async def test_replayed_stale_forged_malformed_and_a_flood_are_counted_not_connected(
    nodes: Callable[..., Any],
) -> None:
    n1 = await nodes(1)
    await until(lambda: n1.last["stats"].get("sent", 0) >= 1, 10, "n1 announcing")
    flood = 2000
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", f"{PREFIX}-n5", sys.executable, "-c", SENDER,
        SECRET, "lab", GROUP, str(PORT), str(flood),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert json.loads(out) == flood + 5

    def counted() -> bool:
        s = n1.last["stats"]
        return s.get("flood", 0) > 0 and s["malformed"] >= 1 and s["replayed"] >= 1

    await wait(counted, 10, "n1 counting the datagrams", n1)
    await asyncio.sleep(0.3)  # the rest of the flood, if any is still queued
    s = n1.last["stats"]
    # the first five came before the flood, with the bucket full: each was
    # checked; of the flood, what passed the limit was checked (malformed)
    assert s["replayed"] == 1 and s["stale"] == 1 and s["forged"] == 1, s
    assert s["received"] <= flood + 5 + s["sent"], s  # also our own, looped back
    parts = ("flood", "malformed", "network", "forged", "stale", "replayed", "accepted", "own")
    assert sum(s[k] for k in parts) == s["received"], s  # each counted once
    print(
        f"\ndiscovery: {flood + 5} datagrams sent at once; n1 received {s['received']} (its "
        f"own included), dropped {s['flood']} as a flood, refused {s['malformed']} as malformed"
    )
    assert "forger" not in n1.last["peers"] and "old" not in n1.last["peers"]
    assert all("forger" not in line["up"] and "old" not in line["up"] for line in n1.lines)
    # the ghost's good announcement was taken (it is only a hint: nothing
    # listens at its address, so no link), and forgotten after 3 intervals
    assert n1.first(lambda line: "ghost" in line["peers"]) is not None
    await until(lambda: "ghost" not in n1.last["peers"], 10, "the ghost forgotten")
    assert n1.last["up"] == []


async def test_the_tutorials_lan_example_in_three_namespaces(lan: None) -> None:
    """eg/lan.py (docs/intro.md, part 13), as its page runs it, on each of three "machines"."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AEMP_SECRET": SECRET,
           "AEMP_DISCOVERY": f"multicast:{GROUP}:{PORT};interface=eth0;interval=1"}  # fmt: skip
    procs = []
    outs: list[list[str]] = [[], [], []]

    async def read(proc: asyncio.subprocess.Process, into: list[str]) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            into.append(line.decode().rstrip("\n"))

    readers = []
    try:
        for i in (1, 2, 3):
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", f"{PREFIX}-n{i}", sys.executable, "eg/lan.py",
                cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(proc)
            readers.append(asyncio.ensure_future(read(proc, outs[i - 1])))

        def here(out: list[str]) -> list[str]:
            return [line for line in out if line.endswith(":4040") and " is here, at " in line]

        await until(lambda: all(len(here(out)) == 3 for out in outs), 20, "all three see all")
        for i, out in enumerate(outs, 1):
            assert here(out)[0].endswith(f"at 10.77.0.{i}:4040")  # itself first
        (gone,) = [line.split()[1] for line in here(outs[0]) if line.endswith("10.77.0.3:4040")]
        procs[2].send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(procs[2].wait(), 10) == 0
        await until(
            lambda: all(f"lan: {gone} left" in out for out in outs[:2]), 10, "the third left"
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        for reader in readers:
            await reader
