"""`aemp names list|release|reset`, with --url, the names_url key, and the
confirmation of reset; on a real etcd and on aemp:// through a seed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from names_helpers import EtcdServer
from test_cli import aemp_cmd

import aemp
from aemp import names


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(Path(tmp_path_factory.mktemp("etcd")) / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def cmd(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    r = await asyncio.to_thread(aemp_cmd, *args, stdin=stdin)
    return r.returncode, r.stdout, r.stderr


async def test_list_release_reset_on_etcd(etcd: EtcdServer) -> None:
    url = f"{etcd.url}/cli{uuid.uuid4().hex}"
    async with await names.open(url) as m:
        await m.acquire("w")
        held = await m.acquire("w")
        await m.release("w", "0")
        rc, out, err = await cmd("names", "list", "--url", url)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("w 0 free token=") and lines[1].startswith("w 1 held token=")
        assert f"token={held.token} updated=20" in lines[1]
        assert (await cmd("names", "list", "other", "--url", url))[1] == ""
        rc, _, err = await cmd("names", "release", "w", "1", "--url", url)
        assert rc == 0, err
        assert [n.free for n in await m.list()] == [True, True]
        # reset asks first
        rc, _, err = await cmd("names", "reset", "--url", url, stdin="no\n")
        assert rc == 1 and "not confirmed" in err
        assert len(await m.list()) == 2
        rc, _, err = await cmd("names", "reset", "--url", url, stdin="yes\n")
        assert rc == 0 and "type 'yes'" in err
        assert await m.list() == []
        await m.acquire("w")
        rc, _, err = await cmd("names", "reset", "--yes", "--url", url)
        assert rc == 0 and err == ""
        assert await m.list() == []


async def test_the_url_comes_from_the_names_url_key(etcd: EtcdServer) -> None:
    url = f"{etcd.url}/key{uuid.uuid4().hex}"
    rc, _, err = await cmd("names_url", url)
    assert rc == 0, err
    async with await names.open(url) as m:
        await m.acquire("k")
        rc, out, err = await cmd("names", "list")
        assert rc == 0 and out.startswith("k 0 held"), err
    rc, _, err = await cmd("names_url", "nonsense")
    assert rc != 0 and "'names_url' must be a URL" in err


async def test_mistakes_are_one_line() -> None:
    for args, want in [
        (("names",), "list, release or reset"),
        (("names", "bogus"), "unknown subcommand 'bogus'"),
        (("names", "release", "w"), "expected FAMILY NAME"),
        (("names", "list", "a", "b", "--url", "memory://"), "expected [FAMILY]"),
        (("names", "list", "--url", "nope://x"), "no names backend for 'nope'"),
        (("names", "list", "bad name", "--url", "memory://"), "family must be"),
    ]:
        rc, out, err = await cmd(*args)
        assert rc in (1, 2) and want in err and out == "", (args, err)
        assert len(err.strip().splitlines()) == 1, err


async def test_aemp_url_through_a_seed(tmp_path: Path) -> None:
    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret="s") as seed:
        names.serve(seed)
        async with await names.open("aemp://", node=seed) as m:
            await m.acquire("svc")
            rc, _, err = await cmd("secret", "s", "seeds", seed.listeners[0])
            assert rc == 0, err
            rc, out, err = await cmd("names", "list", "--url", "aemp://")
            assert rc == 0 and out.startswith("svc 0 held token=1"), err
            rc, _, err = await cmd("names", "release", "svc", "0")  # names_url: aemp://
            assert rc == 0, err
            [rec] = await m.list()
            assert rec.free
