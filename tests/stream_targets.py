"""Init functions for data streams in the tests (tests/test_streams*.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import aemp
from aemp.streams import Stream


@aemp.spawnable
async def echo(stream: Stream) -> None:
    """Send back every byte, then close."""
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)


@aemp.spawnable
async def digest(reply: str, stream: Stream) -> None:
    """Read to the end; answer (bytes, sha256 hex) or the error to `reply`."""
    h = hashlib.sha256()
    n = 0
    try:
        async with stream:
            while data := await stream.receive_some():
                h.update(data)
                n += len(data)
    except aemp.AempError as e:
        aemp.snd(reply, "error", type(e).__name__, str(e), n)
        return
    aemp.snd(reply, "done", n, h.hexdigest())


@aemp.spawnable
async def source(nbytes: int, chunk: int, stream: Stream) -> None:
    """Send `nbytes` of a known pattern, then close."""
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    async with stream:
        while sent < nbytes:
            piece = block[: min(chunk, nbytes - sent)]
            await stream.send_all(piece)
            sent += len(piece)


@aemp.spawnable
def hold(reply: str, stream: Stream) -> None:
    """Keep the stream open, tell `reply` it is there (a plain def)."""
    HELD.append(stream)
    aemp.snd(reply, "held", stream.peer)


@aemp.spawnable
async def fail(stream: Stream) -> None:
    raise RuntimeError("the init function failed")


def not_spawnable(stream: Stream) -> None:  # pragma: no cover - refused
    raise AssertionError("ran a function that is not spawnable")


HELD: list[Any] = []


def peak_rss_kib() -> int:
    """This process's peak resident set so far, in KiB (Linux's ru_maxrss unit)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@aemp.spawnable
async def checksum(reply: str, stream: Stream) -> None:
    """Read to the end; answer ("done", bytes, crc32, peak RSS KiB) or the error."""
    import zlib

    crc = 0
    n = 0
    try:
        async with stream:
            while data := await stream.receive_some():
                crc = zlib.crc32(data, crc)
                n += len(data)
    except aemp.AempError as e:
        aemp.snd(reply, "error", type(e).__name__, str(e), n)
        return
    aemp.snd(reply, "done", n, crc, peak_rss_kib())


@aemp.spawnable
async def sink(stream: Stream) -> None:
    """Read and drop everything until the end."""
    async with stream:
        while await stream.receive_some():
            pass
