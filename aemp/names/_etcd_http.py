# A small HTTP/1.1 client for etcd v3's JSON gateway (POST /v3/kv/range,
# /v3/kv/txn, /v3/lease/grant, ...), on asyncio streams.
#
# Why not a gRPC client library: the maintained asyncio ones pull in grpcio
# and protobuf (tens of MB of native code, with version pins that break
# other packages), for the six unary calls name leases need. The gateway
# is part of every etcd v3 server, speaks JSON with base64 keys, and one
# keep-alive connection per concurrent request is all it takes. So etcd://
# needs no extra package at all; `aemp[etcd]` is kept as an (empty) extra so
# that installs naming it keep working if a client is ever needed.
#
# Connections are pooled per endpoint (at most MAX_IDLE idle); a request
# that fails to connect or breaks mid-way tries the next endpoint, and
# after all of them raises BackendUnavailable. Responses are bounded in
# size (MAX_BODY) so that a wrong server cannot make us read without end.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from ._api import BackendUnavailable

#: idle connections kept per endpoint (more are closed after use)
MAX_IDLE = 16
#: the largest response body read, in bytes: a list of a big family is the
#: largest answer name leases ask for
MAX_BODY = 64 * 1024 * 1024
#: the longest header section read
MAX_HEADERS = 64 * 1024


class EtcdError(Exception):
    """etcd answered with an error (an HTTP status other than 200)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"etcd answered {status}: {body!r:.200}")
        self.status = status
        self.body = body


def b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


def unb64(data: str) -> str:
    return base64.b64decode(data).decode()


def prefix_end(key: str) -> str:
    """The range end that covers every key starting with `key`."""
    raw = key.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


class Gateway:
    def __init__(self, endpoints: list[tuple[str, int]], timeout: float) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        self._idle = {e: [] for e in endpoints}
        self._next = 0  # the endpoint that answered last, tried first

    async def close(self) -> None:
        for conns in self._idle.values():
            while conns:
                _r, w = conns.pop()
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        failures = []
        n = len(self.endpoints)
        for i in range(n):
            k = (self._next + i) % n
            endpoint = self.endpoints[k]
            try:
                async with asyncio.timeout(self.timeout):
                    result = await self._post(endpoint, path, data)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                failures.append(f"{endpoint[0]}:{endpoint[1]}: {e or type(e).__name__}")
                last = e
                continue
            self._next = k
            return result
        raise BackendUnavailable(f"etcd unreachable ({'; '.join(failures)})") from last

    async def _post(self, endpoint: tuple[str, int], path: str, data: bytes) -> dict[str, Any]:
        idle = self._idle[endpoint]
        reused = bool(idle)
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(*endpoint)
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {endpoint[0]}:{endpoint[1]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            status, body, keep = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError) as e:
            writer.close()
            if reused:  # a pooled connection the server closed meanwhile: once more, fresh
                return await self._post_fresh(endpoint, path, data, e)
            raise
        except BaseException:
            writer.close()
            raise
        if keep and len(idle) < MAX_IDLE:
            idle.append((reader, writer))
        else:
            writer.close()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError as e:
            raise ValueError(f"etcd sent a body that is not JSON: {body[:80]!r}") from e
        if status != 200:
            raise EtcdError(status, parsed)
        if not isinstance(parsed, dict):
            raise ValueError(f"etcd sent JSON that is not an object: {body[:80]!r}")
        return parsed

    async def _post_fresh(
        self, endpoint: tuple[str, int], path: str, data: bytes, first: Exception
    ) -> dict[str, Any]:
        self._idle[endpoint].clear()
        return await self._post(endpoint, path, data)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADERS:
        raise ValueError("etcd sent headers that are too long")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"etcd sent a bad status line: {lines[0]!r:.80}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    keep = headers.get("connection", "").lower() != "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            total += size
            if total > MAX_BODY:
                raise ValueError(f"etcd sent a body over {MAX_BODY} bytes")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(chunks), keep
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= MAX_BODY:
        raise ValueError(f"etcd sent a body of {length} bytes (at most {MAX_BODY})")
    return status, await reader.readexactly(length), keep
