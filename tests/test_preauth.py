"""Connections before authentication are bounded (docs/protocol.md, section
13): a cap per node and per source address that closes the oldest first,
a handshake timeout of its own, a listen backlog that fits; and a
legitimate node joins within a second during a flood of 2,000 stalled
connections, from a node in another process with a common fd limit."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import aemp
from aemp._config import Config

SECRET = "test-secret"
TESTS = Path(__file__).resolve().parent
FLOOD = 2000
SOURCES = 100  # the flood comes from 127.0.1.1 to 127.0.1.100: 20 each
VICTIM_FDS = 1024  # a common default soft limit of a server process
_TCP_ESTABLISHED = 1


def _tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a socket (tcp_info's first byte)."""
    return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}: cannot open the flood")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _victim_limits() -> None:  # in the victim's process, before exec
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (VICTIM_FDS, hard))


def _somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def _flood(
    host: str, port: int, n: int, sources: int, limit: float
) -> tuple[list[socket.socket], int]:
    """n connections that say nothing (even ones) or half a greeting (odd
    ones) and stall, from `sources` loopback addresses; bounded by `limit`."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one(i: int) -> bool:
        s = socket.socket()
        s.setblocking(False)
        socks.append(s)
        if sources > 1:
            try:
                s.bind((f"127.0.1.{i % sources + 1}", 0))
            except OSError:  # pragma: no cover - not Linux: all from 127.0.0.1
                pass
        try:
            await loop.sock_connect(s, (host, port))
        except ConnectionResetError:
            return True  # accepted, and closed as the oldest before we saw it
        except OSError:
            return False
        if i % 2:
            try:
                s.send(b"aemp;2;stall")
            except OSError:
                pass  # reset already: closed as the oldest
        return True

    async with asyncio.timeout(limit):
        done = await asyncio.gather(*(one(i) for i in range(n)))
    return socks, sum(done)


async def test_a_node_joins_within_a_second_during_a_flood_of_2000_stalled_connections() -> None:
    _raise_fd_limit(FLOOD + 1024)
    # The victim runs in its own process, with the fd limit a server often
    # has: 2,000 stalled connections used to fill it, and the node could
    # not even accept a legitimate one until they timed out (monitor_timeout).
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    boot = (
        "import logging, runpy, sys; "
        "logging.basicConfig(format='%(levelname)s %(name)s: %(message)s'); "
        f"sys.argv = sys.argv[1:]; runpy.run_path({str(TESTS / 'node_proc.py')!r}, "
        "run_name='__main__')"
    )
    keys: dict[str, Any] = {}  # monitor_timeout 5 s (node_proc's), the handshake defaults
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", boot, "node_proc", "victim", "127.0.0.1:0", SECRET),
        json.dumps(keys),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_victim_limits,
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not first:
            assert proc.stderr is not None
            raise AssertionError(f"the node did not start: {(await proc.stderr.read())!r}")
        info = json.loads(first)
        listener = info["listener"]
        host, port = listener.rsplit(":", 1)
        idle_rss = _vm(proc.pid, "VmRSS")

        t0 = time.monotonic()
        socks, connected = await _flood(host, int(port), FLOOD, SOURCES, limit=30)
        flood_s = time.monotonic() - t0
        assert connected >= FLOOD * 0.9, f"only {connected} of {FLOOD} connected"

        up = asyncio.Event()
        async with aemp.Node(nodeid="legit", secret=SECRET, seeds=[listener]) as legit:
            legit.mon_nodes(lambda nodeid, is_up, *_: is_up and nodeid == "victim" and up.set())
            t1 = time.monotonic()
            try:
                await asyncio.wait_for(up.wait(), 1.0)
            except TimeoutError:
                raise AssertionError(
                    f"the legitimate node did not join within 1 s of a flood of {connected} "
                    f"stalled connections (made in {flood_s:.1f} s)"
                ) from None
            join_s = time.monotonic() - t1
            print(f"flood of {connected} in {flood_s:.2f} s; joined in {join_s * 1000:.0f} ms")

        # the node closed the stalled connections over its cap (the defaults:
        # max_handshakes 256), and holds no more file descriptors than that
        closed = sum(_tcp_state(s) != _TCP_ESTABLISHED for s in socks)
        assert closed >= FLOOD - 256 - (FLOOD - connected), f"only {closed} closed by the node"
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert fds < 256 + 64, f"the node holds {fds} file descriptors"
        peak = _vm(proc.pid, "VmHWM") - idle_rss
        assert peak < 64 * 1024 * 1024, f"the node grew by {peak / 2**20:.0f} MiB"
    finally:
        for s in socks:
            s.close()
        assert proc.stdin is not None
        proc.stdin.close()  # the node closes and its process ends
        try:
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:  # pragma: no cover
            proc.kill()
            _, err_bytes = await proc.communicate()
    err = err_bytes.decode()
    lines = err.splitlines()
    assert not [x for x in lines if x.startswith(("ERROR", "CRITICAL", "Traceback"))], err
    # a flood is logged a few lines per burst, not one per connection
    assert len(lines) <= 20, f"{len(lines)} lines logged:\n{err[:3000]}"
    assert any("max_handshakes (256)" in x for x in lines), err


async def _stalled(addr: str, source: str = "127.0.0.1") -> tuple[Any, Any]:
    """A connection that reads the node's greeting line and says nothing."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"aemp;")
    return reader, writer


async def _closed_by_peer(reader: asyncio.StreamReader, limit: float = 2.0) -> bool:
    try:
        await asyncio.wait_for(reader.read(), limit)  # read to the end
    except ConnectionResetError:
        pass
    return True


def _established(writer: asyncio.StreamWriter) -> bool:
    if writer.is_closing():  # closed from the other end, and seen by the loop
        return False
    return _tcp_state(writer.get_extra_info("socket")) == _TCP_ESTABLISHED


async def test_the_oldest_connection_from_an_address_goes_first_over_the_per_address_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "aemp")
    async with aemp.Node(
        nodeid="n",
        binds=["127.0.0.1:0"],
        secret=SECRET,
        max_handshakes_per_address=3,
        handshake_timeout=30,
    ) as n:
        addr = n.listeners[0]
        first = [await _stalled(addr) for _ in range(3)]
        other = await _stalled(addr, "127.0.1.7")  # another address: its own count
        more = [await _stalled(addr) for _ in range(3)]  # each closes the oldest of 127.0.0.1
        for reader, _ in first:
            assert await _closed_by_peer(reader)
        assert all(_established(w) for _, w in more)
        assert _established(other[1])
        # one line for the burst, naming the key, not one per connection
        cap_lines = [r for r in caplog.records if "max_handshakes_per_address (3)" in r.message]
        assert len(cap_lines) == 1, [r.message for r in caplog.records]
        # a legitimate node from the same address is the newest: it joins
        async with aemp.Node(nodeid="legit", secret=SECRET, seeds=[addr]) as legit:
            up = asyncio.Event()
            legit.mon_nodes(lambda nodeid, is_up, *_: is_up and up.set())
            await asyncio.wait_for(up.wait(), 2)
        assert sum(_established(w) for _, w in more) >= 2  # the newest stalled ones stay
        for _, w in [*first, other, *more]:
            w.close()


async def test_the_oldest_connection_goes_first_over_the_node_cap() -> None:
    async with aemp.Node(
        nodeid="n", binds=["127.0.0.1:0"], secret=SECRET, max_handshakes=4, handshake_timeout=30
    ) as n:
        addr = n.listeners[0]
        conns = [await _stalled(addr, f"127.0.1.{i + 1}") for i in range(6)]
        for reader, _ in conns[:2]:
            assert await _closed_by_peer(reader)
        assert all(_established(w) for _, w in conns[2:])
        for _, w in conns:
            w.close()


async def test_dialled_connections_count_but_an_inbound_flood_does_not_close_them() -> None:
    # a "node" that accepts and never answers: our dial to it stays in its handshake
    dialled: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(reader)
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with aemp.Node(
            nodeid="n",
            binds=["127.0.0.1:0"],
            seeds=[silent_addr],
            secret=SECRET,
            max_handshakes=2,
            handshake_timeout=30,
        ) as n:
            await asyncio.wait_for(accepted.wait(), 2)
            addr = n.listeners[0]
            # one slot for accepted ones: each new one closes the one before
            conns = [await _stalled(addr, f"127.0.1.{i + 1}") for i in range(4)]
            for reader, _ in conns[:3]:
                assert await _closed_by_peer(reader)
            assert _established(conns[3][1])
            # the dial is still in its handshake: the silent node got its
            # greeting and nothing more, no end of the stream
            assert (await asyncio.wait_for(dialled[0].readline(), 2)).startswith(b"aemp;")
            assert not dialled[0].at_eof()
            for _, w in conns:
                w.close()
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_the_handshake_timeout_is_handshake_timeout_not_monitor_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "aemp")
    # shorter than monitor_timeout: a stalled handshake ends after handshake_timeout
    async with aemp.Node(
        nodeid="n", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=30, handshake_timeout=0.3
    ) as n:
        reader, writer = await _stalled(n.listeners[0])
        t0 = time.monotonic()
        assert await _closed_by_peer(reader, limit=5)
        took = time.monotonic() - t0
        assert 0.2 <= took < 3, took
        writer.close()
    assert "not done within handshake_timeout, 0.3 s" in caplog.text
    # longer than monitor_timeout: a slow handshake is not cut at monitor_timeout
    async with aemp.Node(
        nodeid="n", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=0.2, handshake_timeout=1
    ) as n:
        reader, writer = await _stalled(n.listeners[0])
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(), 0.5)  # well past monitor_timeout
        assert await _closed_by_peer(reader, limit=5)
        assert time.monotonic() - t0 >= 0.8
        writer.close()


def test_the_defaults() -> None:
    cfg = Config()
    assert cfg.handshake_timeout == 5.0
    assert cfg.max_handshakes == 256
    assert cfg.max_handshakes_per_address == 32
    assert cfg.listen_backlog == 1024


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *[
            ("handshake_timeout", v)
            for v in (0, -1, 0.01, 1e6, math.inf, math.nan, "5", True, None)
        ],
        *[
            (k, v)
            for k in ("max_handshakes", "max_handshakes_per_address")
            for v in (0, -1, 2.5, 10**7, "256", True, None)
        ],
        *[("listen_backlog", v) for v in (0, -1, 65536, 1.0, "1024", False)],
    ],
)
async def test_a_bad_value_raises_config_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(aemp.ConfigError, match=f"'{key}' must be"):
        aemp.Node(nodeid="n", secret=SECRET, **{key: value})


def test_good_values_are_taken() -> None:
    cfg = Config.from_keys(
        {
            "handshake_timeout": 0.5,
            "max_handshakes": 1,
            "max_handshakes_per_address": 1_000_000,
            "listen_backlog": 65535,
        }
    )
    assert (cfg.handshake_timeout, cfg.max_handshakes) == (0.5, 1)
    assert (cfg.max_handshakes_per_address, cfg.listen_backlog) == (1_000_000, 65535)


@pytest.mark.skipif(
    not Path("/usr/bin/ss").exists(), reason="needs ss (iproute2) to read a backlog"
)
async def test_the_listen_backlog_is_listen_backlog() -> None:
    for backlog in (1024, 77):
        async with aemp.Node(
            nodeid="n", binds=["127.0.0.1:0"], secret=SECRET, listen_backlog=backlog
        ) as n:
            port = n.listeners[0].rsplit(":", 1)[1]
            ss = await asyncio.create_subprocess_exec(
                "ss", "-ltnH", f"sport = :{port}", stdout=subprocess.PIPE
            )
            out = (await ss.communicate())[0].split()
            # a listening socket's Send-Q is its backlog (cut to net.core.somaxconn)
            assert int(out[2]) == min(backlog, _somaxconn()), out
