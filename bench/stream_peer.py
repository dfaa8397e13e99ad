"""The peer process of bench/bench_stream.py.

``python bench/stream_peer.py aemp``: an aemp node listening on 127.0.0.1
whose init function ``sink`` (``__main__:sink`` there) reads a stream to its end and
answers ("done", bytes) to the reply port it was given.
``python bench/stream_peer.py raw``: the reference, an asyncio (uvloop)
TCP server whose Protocol counts what each connection brings (no task,
no copy) and answers the count at its end. Both print one JSON line with their address and
serve until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp
from aemp.streams import Stream

SECRET = "bench-secret"
READ = 256 * 1024


@aemp.spawnable
async def sink(reply: str, stream: Stream) -> None:
    n = 0
    async with stream:
        while data := await stream.receive_some(READ):
            n += len(data)
    aemp.snd(reply, "done", n)


class RawSink(asyncio.Protocol):
    """The reference receiver: counts in data_received, no task, no copy."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.n = 0

    def data_received(self, data: bytes) -> None:
        self.n += len(data)

    def eof_received(self) -> bool:
        self.transport.write(b"%d\n" % self.n)  # type: ignore[attr-defined]
        self.transport.close()
        return True


async def main(mode: str) -> None:
    loop = asyncio.get_running_loop()
    if mode == "aemp":
        async with aemp.Node(nodeid="sink", binds=["127.0.0.1:0"], secret=SECRET) as node:
            print(json.dumps({"listener": node.listeners[0]}), flush=True)
            await loop.run_in_executor(None, sys.stdin.read)
        return
    server = await loop.create_server(RawSink, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(json.dumps({"listener": f"{host}:{port}"}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    aemp.run(main(sys.argv[1]))
