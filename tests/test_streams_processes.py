"""Data streams between separate processes: a gigabyte with bounded memory
on both sides, and a peer killed with SIGKILL in the middle of a stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import until

import aemp
from aemp.streams import BrokenStreamError, open_stream

STREAM_PROC = Path(__file__).resolve().parent / "stream_proc.py"
SECRET = "stream-proc-secret"
GIGABYTE = 1024**3
# What a side may grow by while a gigabyte passes: stream_buffer (1 MiB)
# each way, a read of the socket, the sender's 1 MiB block and the
# interpreter's own churn. An unbounded buffer would grow by the gigabyte.
RSS_BOUND_KIB = 48 * 1024


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> tuple[Proc, dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(STREAM_PROC),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        assert line, f"{args[0]} process ended without a word"
        return cls(proc), json.loads(line)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                self.proc.kill()
        async with asyncio.timeout(30):
            await self.proc.wait()


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        await p.stop()


async def test_a_gigabyte_between_two_processes_in_bounded_memory(procs: list[Proc]) -> None:
    server, info = await Proc.start("serve", SECRET)
    procs.append(server)
    sender, result = await Proc.start("send", SECRET, info["listener"], "server", str(GIGABYTE))
    procs.append(sender)
    assert result["sent"] == GIGABYTE
    tag, received, crc, server_peak = result["answer"]
    assert (tag, received, crc) == ("done", GIGABYTE, result["crc"])
    # peak RSS over each process's whole life, against what it held before
    sender_growth = result["rss_peak_kib"] - result["rss_before_kib"]
    server_growth = server_peak - info["rss_kib"]
    print(
        f"1 GiB in {result['seconds']:.1f} s; peak RSS: sender {result['rss_peak_kib']} KiB "
        f"(+{sender_growth} while streaming), receiver {server_peak} KiB (+{server_growth}); "
        f"bound on the growth {RSS_BOUND_KIB} KiB"
    )
    assert sender_growth < RSS_BOUND_KIB
    assert server_growth < RSS_BOUND_KIB


@pytest.fixture
async def near(procs: list[Proc]) -> AsyncIterator[tuple[aemp.Node, Proc]]:
    server, info = await Proc.start("serve", SECRET)
    procs.append(server)
    async with aemp.Node(
        nodeid="near", seeds=[info["listener"]], secret=SECRET, monitor_timeout=2
    ) as node:
        await until(lambda: node.node_is_up("server"), limit=10, what="server up")
        yield node, server


async def test_a_sender_killed_mid_stream_breaks_the_readers_stream(
    near: tuple[aemp.Node, Proc],
) -> None:
    node, server = near
    stream = await open_stream(node, "server", "stream_targets:source", 10 * GIGABYTE, 65536)
    got = 0
    async with asyncio.timeout(60):  # 20 MB takes well under a second
        while got < 20_000_000:
            got += len(await stream.receive_some())
    server.kill9()
    with pytest.raises(BrokenStreamError) as info:
        async with asyncio.timeout(10):
            while await stream.receive_some():
                pass
    print("reader:", info.value)
    await stream.aclose()


async def test_a_reader_killed_mid_stream_breaks_the_senders_stream(
    near: tuple[aemp.Node, Proc],
) -> None:
    node, server = near
    stream = await open_stream(node, "server", "stream_targets:sink")
    block = b"q" * 1024 * 1024
    async with asyncio.timeout(60):  # 20 MiB takes well under a second
        for _ in range(20):
            await stream.send_all(block)
    server.kill9()
    with pytest.raises(BrokenStreamError) as info:
        async with asyncio.timeout(10):
            while True:
                await stream.send_all(block)
    print("sender:", info.value)
    # the node is unharmed and notices the loss as for any node
    await until(lambda: not node.node_is_up("server"), limit=10, what="server down")
    await stream.aclose()
