"""A node in its own process for the data-stream tests (tests/test_streams_processes.py).

``python tests/stream_proc.py serve SECRET`` starts a node listening on
127.0.0.1 that accepts streams to the init functions of
tests/stream_targets.py; it prints {"listener": ..., "rss_kib": ...} as
one JSON line and serves until stdin closes or it is killed.

``python tests/stream_proc.py send SECRET SEED NODE NBYTES`` joins SEED,
opens a stream to NODE's stream_targets:checksum, sends NBYTES of a known
pattern, closes, and prints one JSON line: what it sent (bytes, crc32),
the answer, and its own peak RSS before and after (KiB).
"""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import stream_targets

import aemp
from aemp.streams import open_stream

BLOCK = 1024 * 1024


async def serve(secret: str) -> None:
    async with aemp.Node(
        nodeid="server", binds=["127.0.0.1:0"], secret=secret, monitor_timeout=2
    ) as node:
        info = {"listener": node.listeners[0], "rss_kib": stream_targets.peak_rss_kib()}
        print(json.dumps(info), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def send(secret: str, seed: str, to: str, nbytes: str) -> None:
    total = int(nbytes)
    async with aemp.Node(nodeid="sender", seeds=[seed], secret=secret, monitor_timeout=2) as node:
        answer: asyncio.Future[tuple[object, ...]] = asyncio.get_running_loop().create_future()
        reply = node.port(lambda *m: answer.set_result(m))
        block = bytes(range(256)) * (BLOCK // 256)
        before = stream_targets.peak_rss_kib()
        crc = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(60):
            while not node.node_is_up(to):
                await asyncio.sleep(0.01)
        stream = await open_stream(node, to, "stream_targets:checksum", reply, timeout=20)
        async with stream:
            sent = 0
            while sent < total:
                piece = block if total - sent >= BLOCK else block[: total - sent]
                await stream.send_all(piece)
                crc = zlib.crc32(piece, crc)
                sent += len(piece)
        got = await asyncio.wait_for(answer, 120)
        seconds = loop.time() - start
        print(
            json.dumps(
                {
                    "sent": sent,
                    "crc": crc,
                    "answer": list(got),
                    "rss_before_kib": before,
                    "rss_peak_kib": stream_targets.peak_rss_kib(),
                    "seconds": seconds,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    aemp.run(serve(*args) if mode == "serve" else send(*args))
