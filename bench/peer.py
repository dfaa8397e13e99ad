"""The far side of the remote benchmarks, run as its own process.

``python bench/peer.py aemp``: a node listening on 127.0.0.1 with a port
that counts "ping" messages, answers "report" with (count, cpu seconds
since the first ping) and answers "echo" at once. ``python bench/peer.py
raw``: the reference, plain asyncio + msgpack doing the same. Either prints
one JSON line with where it listens, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

import aemp

SECRET = "bench-secret"


async def wait_stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def serve_aemp(framing: str) -> None:
    async with aemp.Node(
        nodeid="peer", binds=["127.0.0.1:0"], secret=SECRET, framing_format=[framing]
    ) as node:
        count = 0
        cpu0 = 0.0

        def ping(i: int, x: str) -> None:
            nonlocal count, cpu0
            if not count:
                cpu0 = time.process_time()
            count += 1

        def report(reply: str) -> None:
            nonlocal count
            node.snd(reply, count, time.process_time() - cpu0)
            count = 0

        p = node.port(ping=ping, report=report, echo=lambda *a: node.snd(a[-1], *a[:-1]))
        print(json.dumps({"listener": node.listeners[0], "port": p}), flush=True)
        await wait_stdin_closed()


class RawServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.unpacker = msgpack.Unpacker()
        self.packer = msgpack.Packer()
        self.count = 0
        self.cpu0 = 0.0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        import socket

        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        out = []
        handlers = {"ping": self._ping}
        for msg in self.unpacker:
            h = handlers.get(msg[0])
            if h is not None:
                h(*msg[1:])
            elif msg[0] == "echo":
                out.append(self.packer.pack(msg[1:]))
            elif msg[0] == "report":
                out.append(self.packer.pack([self.count, time.process_time() - self.cpu0]))
                self.count = 0
        if out:
            self.transport.write(b"".join(out))

    def _ping(self, i: int, x: str) -> None:
        if not self.count:
            self.cpu0 = time.process_time()
        self.count += 1


async def serve_raw() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"listener": f"127.0.0.1:{port}"}), flush=True)
    await wait_stdin_closed()
    server.close()


def main() -> None:
    mode = sys.argv[1]
    if mode == "raw":
        aemp.run(serve_raw())
    else:
        aemp.run(serve_aemp(sys.argv[2] if len(sys.argv) > 2 else "msgpack"))
    os._exit(0)


if __name__ == "__main__":
    main()
