"""remote_oneway, remote_cal, remote_cal_pipelined: two processes on 127.0.0.1.

The peer (bench/peer.py) runs in its own process, once as an aemp node and
once as the raw reference: asyncio + uvloop TCP, msgpack Packer/Unpacker,
writes batched per event-loop turn, the same message shapes. Each figure is
printed next to the reference measured in the same run: aemp and the
reference take turns over three rounds, so that a slow spell of a noisy
machine hits both. remote_cal_pipelined keeps 1,000 calls outstanding,
each reply making the next call; its reference does the same with raw
echo requests, and the figure also names the issue's target.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import msgpack
from _common import Peer, figure

import aemp

PEER = Path(__file__).resolve().parent / "peer.py"
SECRET = "bench-secret"
LIMIT_S = 60.0
RAW = "raw asyncio+uvloop+msgpack"


# ---------------------------------------------------------------- aemp side


async def aemp_oneway(peer: Peer, n: int, batch: int = 1000) -> tuple[float, float]:
    async with aemp.Node(nodeid="bench", seeds=[peer.info["listener"]], secret=SECRET) as node:
        target = peer.info["port"]
        await node.cal(target, "report", timeout=10)  # connected, counters reset
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        x = "x" * 32
        snd = node.snd
        for start in range(0, n, batch):
            for i in range(start, start + batch):
                snd(target, "ping", i, x)
            await asyncio.sleep(0)
        count, peer_cpu = await node.cal(target, "report", timeout=LIMIT_S)
        dt = time.perf_counter() - t0
        assert count == n, (count, n)
        return n / dt, (time.process_time() - cpu0 + peer_cpu) / n


async def aemp_cal(peer: Peer, n: int) -> list[float]:
    async with aemp.Node(nodeid="bench", seeds=[peer.info["listener"]], secret=SECRET) as node:
        target = peer.info["port"]
        await node.cal(target, "echo", 0, timeout=10)
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            await node.cal(target, "echo", i)
            out.append(time.perf_counter() - t0)
        return out


async def aemp_pipelined(peer: Peer, n: int, window: int = 1000) -> float:
    """cal with `window` calls outstanding: each reply makes the next call
    (as the raw reference does), from the callback form of cal."""
    async with aemp.Node(nodeid="bench", seeds=[peer.info["listener"]], secret=SECRET) as node:
        target = peer.info["port"]
        await node.cal(target, "echo", 0, timeout=10)
        finished = node.loop.create_future()
        sent = done = 0

        def got(*_: Any) -> None:
            nonlocal sent, done
            done += 1
            if sent < n:
                node.cal(target, "echo", sent, cb=got, timeout=LIMIT_S)
                sent += 1
            elif done == n:
                finished.set_result(None)

        t0 = time.perf_counter()
        for i in range(min(window, n)):
            node.cal(target, "echo", i, cb=got, timeout=LIMIT_S)
            sent += 1
        await finished
        return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- raw reference


class RawClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.unpacker = msgpack.Unpacker()
        self.waiters: list[asyncio.Future[Any]] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for msg in self.unpacker:
            self.waiters.pop(0).set_result(msg)


async def raw_connect(peer: Peer) -> RawClient:
    host, port = peer.info["listener"].rsplit(":", 1)
    _, proto = await asyncio.get_running_loop().create_connection(RawClient, host, int(port))
    return proto


async def raw_request(c: RawClient, msg: list[Any], packer: msgpack.Packer) -> Any:
    fut = asyncio.get_running_loop().create_future()
    c.waiters.append(fut)
    c.transport.write(packer.pack(msg))
    return await fut


async def raw_oneway(peer: Peer, n: int, batch: int = 1000) -> tuple[float, float]:
    c = await raw_connect(peer)
    packer = msgpack.Packer()
    await raw_request(c, ["report"], packer)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    x = "x" * 32
    for start in range(0, n, batch):
        c.transport.write(
            b"".join([packer.pack(["ping", i, x]) for i in range(start, start + batch)])
        )
        await asyncio.sleep(0)
    count, peer_cpu = await raw_request(c, ["report"], packer)
    dt = time.perf_counter() - t0
    assert count == n
    c.transport.close()
    return n / dt, (time.process_time() - cpu0 + peer_cpu) / n


async def raw_cal(peer: Peer, n: int) -> list[float]:
    c = await raw_connect(peer)
    packer = msgpack.Packer()
    await raw_request(c, ["echo", 0], packer)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await raw_request(c, ["echo", i], packer)
        out.append(time.perf_counter() - t0)
    c.transport.close()
    return out


async def raw_pipelined(peer: Peer, n: int, window: int = 1000) -> float:
    """Echo requests with `window` outstanding: each reply sends the next
    request, and the requests a read brings about go out in one write."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    packer = msgpack.Packer()

    class Client(RawClient):
        sent = done = 0

        def data_received(self, data: bytes) -> None:
            self.unpacker.feed(data)
            out = []
            for _ in self.unpacker:
                self.done += 1
                if self.sent < n:
                    out.append(packer.pack(["echo", self.sent]))
                    self.sent += 1
            if out:
                self.transport.write(b"".join(out))
            if self.done == n and not finished.done():
                finished.set_result(None)

    host, port = peer.info["listener"].rsplit(":", 1)
    _, c = await loop.create_connection(Client, host, int(port))
    t0 = time.perf_counter()
    c.sent = min(window, n)
    c.transport.write(b"".join(packer.pack(["echo", i]) for i in range(c.sent)))
    await finished
    rate = n / (time.perf_counter() - t0)
    c.transport.close()
    return rate


# ---------------------------------------------------------------- driver


def _with_peer(mode: str, fn: Any, *args: Any) -> Any:
    peer = Peer(PEER, mode)
    try:
        return aemp.run(asyncio.wait_for(fn(peer, *args), LIMIT_S))
    finally:
        peer.stop()


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e6


def run(quick: bool = False) -> list[dict[str, Any]]:
    # aemp and its reference take turns, so that a slow spell of a noisy
    # machine hits both; throughput is the best round of each, latency the
    # percentiles of all rounds together
    rounds = 3
    n = 100_000 if quick else 1_000_000
    ncal = 2_000 if quick else 10_000
    npipe = 20_000 if quick else 200_000
    out: list[dict[str, Any]] = []

    ow = [
        (_with_peer("aemp", aemp_oneway, n), _with_peer("raw", raw_oneway, n))
        for _ in range(rounds)
    ]
    (rate, cpu), (rref, cref) = max(a for a, _ in ow), max(r for _, r in ow)
    out.append(figure("remote_oneway", rate, "msgs/s", RAW, rref))
    cpu, cref = min(a[1] for a, _ in ow), min(r[1] for _, r in ow)
    out.append(
        figure("remote_oneway_cpu", cpu * 1e6, "us CPU/msg (lower is better)", RAW, cref * 1e6)
    )

    lat: list[float] = []
    lref: list[float] = []
    for _ in range(rounds):
        lat += _with_peer("aemp", aemp_cal, ncal // rounds)
        lref += _with_peer("raw", raw_cal, ncal // rounds)
    out.append(figure("remote_cal", _p(lat, 50), "us p50 (lower is better)", RAW, _p(lref, 50)))
    out[-1]["p99"] = round(_p(lat, 99), 1)
    out[-1]["reference_p99"] = round(_p(lref, 99), 1)

    pp = [
        (_with_peer("aemp", aemp_pipelined, npipe), _with_peer("raw", raw_pipelined, npipe))
        for _ in range(rounds)
    ]
    prate, pref = max(a for a, _ in pp), max(r for _, r in pp)
    out.append(figure("remote_cal_pipelined", prate, "calls/s", RAW, pref))
    out[-1]["target"] = 300_000
    return out
