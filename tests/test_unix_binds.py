"""Nodes on one host that talk over unix-domain sockets ("unix:/path" binds and seeds)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import Recorder, until

import aemp

SECRET = "unix-secret"
NODE_PROC = Path(__file__).resolve().parent / "node_proc.py"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # short: a unix socket's path has at most about 100 bytes, and pytest's tmp_path is long
    d = Path(tempfile.mkdtemp(prefix="aemp-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def links(node: aemp.Node) -> dict[str, str]:
    return {n: link["address"] for n, link in aemp.lowlevel.statistics(node)["links"].items()}


async def test_nodes_talk_only_over_unix_sockets(sockdir: Path, stack: AsyncExitStack) -> None:
    seed_path = sockdir / "run" / "seed.sock"  # the directory is made
    seed = await stack.enter_async_context(
        aemp.Node(nodeid="seed", binds=[f"unix:{seed_path}"], secret=SECRET)
    )
    assert seed.listeners == [f"unix:{seed_path}"]
    assert stat.S_IMODE(seed_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(seed_path.parent.stat().st_mode) == 0o700
    # a worker listens on a unix socket of its own; the other has no binds at all
    w1 = await stack.enter_async_context(
        aemp.Node(
            nodeid="w1",
            binds=[f"unix:{sockdir}/w1.sock"],
            seeds=[f"unix:{seed_path}"],
            secret=SECRET,
        )
    )
    w2 = await stack.enter_async_context(
        aemp.Node(nodeid="w2", seeds=[f"unix:{seed_path}"], secret=SECRET)
    )
    await until(lambda: seed.node_is_up("w1") and seed.node_is_up("w2"), what="both attached")
    # w2 reaches w1 through the address the database holds: its unix socket
    rec = Recorder()
    port = w1.port(rec)
    w2.snd(port, "over", "unix")
    await rec.wait(1)
    assert rec.calls == [("over", "unix")]
    assert links(w2)["w1"] == f"unix:{sockdir}/w1.sock"
    assert links(w2)["seed"] == f"unix:{seed_path}"
    # a call and its reply, then a node that leaves: its file goes with it
    p = w1.port(lambda *m: w1.snd(m[-1], "pong", *m[:-1]))
    assert await w2.cal(p, "ping", 1, timeout=5) == ("pong", "ping", 1)
    await w1.close()
    assert not (sockdir / "w1.sock").exists()


async def test_mixed_tcp_and_unix_unix_preferred_on_the_same_host(
    sockdir: Path, stack: AsyncExitStack
) -> None:
    seed = await stack.enter_async_context(
        aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET)
    )
    both = await stack.enter_async_context(
        aemp.Node(
            nodeid="both",
            binds=[f"unix:{sockdir}/both.sock", "127.0.0.1:0"],
            seeds=seed.listeners,
            secret=SECRET,
        )
    )
    # published after the TCP addresses, whatever the order of the binds
    assert both.listeners[0].startswith("127.0.0.1:")
    assert both.listeners[1] == f"unix:{sockdir}/both.sock"
    tcp_only = await stack.enter_async_context(
        aemp.Node(nodeid="tcp", binds=["127.0.0.1:0"], seeds=seed.listeners, secret=SECRET)
    )
    await until(lambda: seed.node_is_up("both") and seed.node_is_up("tcp"), what="attached")
    rec = Recorder()
    tcp_only.snd(both.port(rec), "hi")
    await rec.wait(1)
    # the same host: the unix socket is used, the seed link stays TCP
    assert links(tcp_only)["both"] == f"unix:{sockdir}/both.sock"
    assert links(tcp_only)["seed"] == seed.listeners[0]
    # and back over the same link
    rec2 = Recorder()
    both.snd(tcp_only.port(rec2), "back")
    await rec2.wait(1)


async def test_a_unix_address_that_is_no_socket_here_is_skipped(
    sockdir: Path, stack: AsyncExitStack
) -> None:
    """A node elsewhere publishes a path that does not exist on this host:
    the TCP address is dialled instead."""
    seed = await stack.enter_async_context(
        aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET)
    )
    other = await stack.enter_async_context(
        aemp.Node(
            nodeid="other",
            binds=["127.0.0.1:0", f"unix:{sockdir}/other.sock"],
            seeds=seed.listeners,
            secret=SECRET,
        )
    )
    os.rename(sockdir / "other.sock", sockdir / "moved.sock")  # as if on another host
    me = await stack.enter_async_context(
        aemp.Node(nodeid="me", seeds=seed.listeners, secret=SECRET)
    )
    await until(lambda: seed.node_is_up("other") and seed.node_is_up("me"), what="attached")
    rec = Recorder()
    me.snd(other.port(rec), "via tcp")
    await rec.wait(1, limit=5)
    assert links(me)["other"] == other.listeners[0]
    # the node leaves the moved file alone: it is no longer at its path
    await other.close()
    assert (sockdir / "moved.sock").exists()


async def test_a_stale_socket_file_is_replaced(sockdir: Path) -> None:
    path = sockdir / "n.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # what a node killed with SIGKILL leaves behind
    dead.close()
    assert path.exists()
    async with aemp.Node(nodeid="n", binds=[f"unix:{path}"], secret=SECRET) as n:
        assert n.listeners == [f"unix:{path}"]
        async with aemp.Node(nodeid="m", seeds=[f"unix:{path}"], secret=SECRET) as m:
            await until(lambda: m.node_is_up("n"), what="connected to n")


async def test_a_live_socket_is_refused(sockdir: Path) -> None:
    path = sockdir / "n.sock"
    async with aemp.Node(nodeid="n", binds=[f"unix:{path}"], secret=SECRET) as n:
        second = aemp.Node(nodeid="n2", binds=[f"unix:{path}"], secret=SECRET)
        with pytest.raises(aemp.ConfigError, match="a live process accepts connections"):
            await second.start()
        await second.close()
        # the first one is unharmed and its file still there
        assert path.exists()
        async with aemp.Node(nodeid="m", seeds=[f"unix:{path}"], secret=SECRET) as m:
            await until(lambda: m.node_is_up("n"), what="connected to n")
        await n.close()
    assert not path.exists()


async def test_a_path_that_is_not_a_socket_is_refused(sockdir: Path) -> None:
    path = sockdir / "file"
    path.write_text("keep me")
    node = aemp.Node(nodeid="n", binds=[f"unix:{path}"], secret=SECRET)
    with pytest.raises(aemp.ConfigError, match="not a socket"):
        await node.start()
    await node.close()
    assert path.read_text() == "keep me"


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("binds", "unix:relative/path", "absolute path"),
        ("seeds", "unix:", "absolute path"),
        ("binds", "unix:/" + "x" * 200, "at most 103"),
        ("seeds", "unix:/tmp/dir/", "absolute path"),
    ],
)
def test_bad_unix_addresses(key: str, value: str, match: str) -> None:
    with pytest.raises(aemp.ConfigError, match=match) as info:
        aemp.Node(nodeid="n", secret=SECRET, **{key: [value]})
    assert value[:20] in str(info.value)


async def test_a_seed_path_with_nobody_behind_it_is_retried(
    sockdir: Path, stack: AsyncExitStack
) -> None:
    path = sockdir / "later.sock"
    node = await stack.enter_async_context(
        aemp.Node(nodeid="early", seeds=[f"unix:{path}"], secret=SECRET, monitor_timeout=2)
    )
    await asyncio.sleep(0.1)
    seed = await stack.enter_async_context(
        aemp.Node(nodeid="late", binds=[f"unix:{path}"], secret=SECRET)
    )
    await until(lambda: node.node_is_up("late"), limit=8, what="the seed reached once it is up")
    assert seed.node_is_up("early")


async def test_a_node_killed_with_sigkill_leaves_a_file_the_next_one_replaces(
    sockdir: Path,
) -> None:
    """A node in its own process, reached over its unix socket only, is killed
    with SIGKILL; its socket file stays behind, and a new node takes the path."""
    path = sockdir / "proc.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(NODE_PROC),
        "victim",
        f"unix:{path}",
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert info["listener"] == f"unix:{path}"
        async with aemp.Node(
            nodeid="me", seeds=[f"unix:{path}"], secret=SECRET, monitor_timeout=2
        ) as me:
            await until(lambda: me.node_is_up("victim"), limit=10, what="victim up")
            for i in range(3):
                me.snd(info["sink"], "n", i)
            assert await me.cal(info["sink"], "count", timeout=5) == (3, [2])
            lost = Recorder()
            me.mon(info["sink"], lost)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            (reason,) = await lost.wait(1, limit=10)
            assert reason[0] == "transport_error"
        assert path.exists()  # nobody removed it
        async with aemp.Node(nodeid="heir", binds=[f"unix:{path}"], secret=SECRET) as heir:
            assert heir.listeners == [f"unix:{path}"]
            async with aemp.Node(nodeid="m", seeds=[f"unix:{path}"], secret=SECRET) as m:
                await until(lambda: m.node_is_up("heir"), what="connected to the heir")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
