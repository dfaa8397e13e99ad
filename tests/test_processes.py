"""Nodes in separate processes: loss of a peer killed with SIGKILL, and its restart."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder

import aemp
from aemp import lowlevel
from aemp.tls import make_certificate

NODE_PROC = Path(__file__).resolve().parent / "node_proc.py"
SECRET = "proc-secret"


class Proc:
    """A node process started by the test; stopped by its PID only."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, str]) -> None:
        self.proc = proc
        self.info = info

    @classmethod
    async def start(cls, nodeid: str, bind: str, **keys: Any) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_PROC),
            nodeid,
            bind,
            SECRET,
            json.dumps(keys),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        return cls(proc, json.loads(line))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def procs() -> Any:
    started: list[Proc] = []

    async def start(nodeid: str, bind: str, **keys: Any) -> Proc:
        p = await Proc.start(nodeid, bind, **keys)
        started.append(p)
        return p

    yield start
    for p in started:
        await p.stop()


async def test_kill9_mid_stream_then_restart(procs: Any) -> None:
    peer = await procs("peer", "127.0.0.1:0")
    listener, old_sink = peer.info["listener"], peer.info["sink"]
    async with aemp.Node(nodeid="me", seeds=[listener], secret=SECRET, monitor_timeout=5) as me:
        events: list[Any] = []
        fired = asyncio.Event()

        def on_loss(*reason: Any) -> None:
            events.append(("fired", reason))
            fired.set()

        relay_port = me.port(relay=lambda i: events.append(("relay", i)))
        me.mon(old_sink, on_loss)
        assert await me.cal(old_sink, "count") == (0, [])

        i = 0
        killed_at: int | None = None
        async with asyncio.timeout(20):
            while not fired.is_set() or i < (killed_at or 0) + 50:
                me.snd(old_sink, "n", i)
                me.snd("peer", "snd", relay_port, "relay", i)  # relayed back by peer
                i += 1
                if i == 2000:
                    killed_at = i
                    peer.kill9()
                await asyncio.sleep(0.001 if killed_at else 0)
        assert killed_at is not None
        f = next(k for k, e in enumerate(events) if e[0] == "fired")
        assert events[f][1][:2] == ("transport_error", "peer")
        # guarantee 2: nothing sent after the loss came back before the monitor fired
        assert all(e[1] < killed_at for e in events[:f] if e[0] == "relay")

        # the same node ID comes back on the same address
        peer2 = await procs("peer", listener)
        new_sink = peer2.info["sink"]
        assert new_sink != old_sink and aemp.node_of(new_sink) == "peer"
        async with asyncio.timeout(20):
            while not me.node_is_up("peer"):
                await asyncio.sleep(0.01)
        me.snd(old_sink, "n", -1)  # an old port ID: must never receive again
        gone = Recorder()
        me.mon(old_sink, gone)
        await gone.wait(limit=10)
        assert gone.calls == [("no_such_port", "cannot monitor nonexistent port", old_sink)]
        assert await me.cal(new_sink, "count", timeout=10) == (0, [])


CERT = make_certificate("aemp-test")


@pytest.mark.parametrize(
    "keys",
    [
        {"framing_format": ["msgpack"]},
        {"framing_format": ["json"]},
        {"cert": CERT, "framing_format": ["msgpack"]},
        {"cert": CERT, "framing_format": ["json"], "auth_offer": ["tls_sha3_512"]},
    ],
    ids=["msgpack-secret", "json-secret", "msgpack-tls", "json-tls"],
)
async def test_exchange_spawn_call_monitor(procs: Any, keys: dict[str, Any]) -> None:
    """Two processes: snd, remote spawn, cal, mon and kil, in each framing and auth."""
    peer = await procs("peer", "127.0.0.1:0", **keys)
    sink = peer.info["sink"]
    async with aemp.Node(
        nodeid="me", seeds=[peer.info["listener"]], secret=SECRET, monitor_timeout=5, **keys
    ) as me:
        for i in range(100):
            me.snd(sink, "n", i)
        assert await me.cal(sink, "count", timeout=10) == (100, [99])
        link = lowlevel.statistics(me)["links"]["peer"]
        assert (link["tls"] is not None) == ("cert" in keys)
        assert link["framing"] == keys["framing_format"][0]

        worker = me.spawn("peer", "spawn_targets:echo_init", "W")
        assert aemp.node_of(worker) == "peer"
        assert await me.cal(worker, "echo", {"k": [1, 2.5, None, True]}, timeout=10) == (
            "W",
            {"k": [1, 2.5, None, True]},
        )
        died = Recorder()
        me.mon(worker, died)
        me.kil(worker, "retired", "by test")
        await died.wait(limit=10)
        assert died.calls == [("retired", "by test")]
        with pytest.raises(aemp.PortDead):
            await me.cal(worker, "echo", 1, timeout=10)
