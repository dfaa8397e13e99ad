"""stream_throughput: bytes per second through an aemp data stream between
two processes on 127.0.0.1, next to a raw asyncio (uvloop) socket doing
the same in the same run.

The peer (bench/stream_peer.py) runs in its own process, once as an aemp
node whose init function reads a stream to its end, once as a plain
asyncio server that reads a connection to its end; both answer the count.
The sender writes the same 1 MiB block over and over (send_all, or write
plus drain) and the time runs from the first byte to the answer, so both
include the receiver's reads. aemp's time includes opening the stream
(a spawn, a round trip and the data connection's handshake): small next
to the transfer. The two take turns over three rounds; each figure is the
best round. The target is at least 0.7 of the raw figure.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import Peer

import aemp
from aemp.streams import open_stream

PEER = Path(__file__).resolve().parent / "stream_peer.py"
SECRET = "bench-secret"
LIMIT_S = 120.0
BLOCK = bytes(range(256)) * 4096  # 1 MiB


async def aemp_stream(peer: Peer, nbytes: int) -> float:
    async with aemp.Node(nodeid="src", seeds=[peer.info["listener"]], secret=SECRET) as node:
        await node.cal("sink", "up_nodes", timeout=20)  # connected
        answer: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        reply = node.port(lambda *m: answer.set_result(m))
        start = time.perf_counter()
        stream = await open_stream(node, "sink", "__main__:sink", reply, timeout=10)
        async with stream:
            for _ in range(nbytes // len(BLOCK)):
                await stream.send_all(BLOCK)
        tag, got = await answer
        seconds = time.perf_counter() - start
        assert (tag, got) == ("done", nbytes), (tag, got)
        return nbytes / seconds


async def raw_stream(peer: Peer, nbytes: int) -> float:
    host, _, port = peer.info["listener"].rpartition(":")
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(nbytes // len(BLOCK)):
        writer.write(BLOCK)
        await writer.drain()
    writer.write_eof()
    got = int(await reader.readline())
    seconds = time.perf_counter() - start
    writer.close()
    assert got == nbytes, got
    return nbytes / seconds


def _with_peer(mode: str, fn: Any, nbytes: int) -> float:
    peer = Peer(PEER, mode)
    try:
        return aemp.run(asyncio.wait_for(fn(peer, nbytes), LIMIT_S))  # type: ignore[no-any-return]
    finally:
        peer.stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    nbytes = (256 if quick else 2048) * len(BLOCK)
    rounds = [
        (_with_peer("aemp", aemp_stream, nbytes), _with_peer("raw", raw_stream, nbytes))
        for _ in range(3)
    ]
    value = max(a for a, _ in rounds) / 1e6
    ref = max(r for _, r in rounds) / 1e6
    return [
        {
            "bench": "stream_throughput",
            "value": round(value, 1),
            "unit": "MB/s",
            "reference": "raw asyncio+uvloop socket",
            "reference_value": round(ref, 1),
            "ratio": round(value / ref, 3),
            "target": 0.7,
            "bytes": nbytes,
        }
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for figure in run(quick="--quick" in sys.argv):
        print(json.dumps(figure))
