"""Bad input from a raw socket closes that one connection; the node serves on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgpack
import pytest

import aemp
from aemp import wire

SECRET = "bad-input-secret"


@pytest.fixture
async def server() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with (
        aemp.Node(
            nodeid="srv", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=1.0,
            handshake_timeout=1.0, max_packet=4096,
        ) as srv,
        aemp.Node(nodeid="good", seeds=srv.listeners, secret=SECRET) as good,
    ):  # fmt: skip
        async with asyncio.timeout(5):
            while not good.node_is_up("srv"):
                await asyncio.sleep(0.005)
        yield srv, good


async def still_serving(srv: aemp.Node, good: aemp.Node) -> None:
    echo = srv.port(echo=lambda reply: srv.snd(reply, "ok"))
    assert await good.cal(echo, "echo", timeout=5) == ("ok",)


async def closed_by_peer(reader: asyncio.StreamReader, limit: float = 5.0) -> bool:
    async with asyncio.timeout(limit):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return True


async def raw(srv: aemp.Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = srv.listeners[0].rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def handshaken(
    srv: aemp.Node, framing: str = "msgpack"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await raw(srv)
    conn = wire.Connection(
        wire.Settings(nodeid="raw", provider="test", secret=SECRET, framing_format=[framing]),
        peeraddr=srv.listeners[0],
    )
    conn.start()
    writer.write(conn.data_to_send())
    async with asyncio.timeout(5):
        while True:
            ev = conn.next_event()
            writer.write(conn.data_to_send())
            if isinstance(ev, wire.Authenticated):
                break
            if ev is wire.NEED_DATA:
                conn.receive_data(await reader.read(65536))
    return reader, writer


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\xff" * 100 + b"\n",
        b"aemp;2;x;hmac_sha3_512;msgpack\nnonce\n",
        b"aemp;1;x;hmac_sha3_512;msgpack\n" + b"n" * 88 + b"\nhmac_sha3_512;00;msgpack\n",
        b"x" * (1024 * 1024),
    ],
    ids=["http", "binary", "version", "bad-token", "1MB-line"],
)
async def test_garbage_in_handshake(server: tuple[aemp.Node, aemp.Node], data: bytes) -> None:
    srv, good = server
    reader, writer = await raw(srv)
    writer.write(data)
    assert await closed_by_peer(reader)
    writer.close()
    await still_serving(srv, good)


async def test_handshake_that_stops_half_way(server: tuple[aemp.Node, aemp.Node]) -> None:
    srv, good = server
    reader, writer = await raw(srv)
    writer.write(b"aemp;1;slow;hmac_sha3_512;msgpack\n")  # and then nothing
    assert await closed_by_peer(reader, limit=5)  # handshake_timeout is 1 s here
    writer.close()
    await still_serving(srv, good)


@pytest.mark.parametrize(
    ("framing", "payload"),
    [
        ("msgpack", msgpack.packb("not an array")),
        ("msgpack", msgpack.packb([1, "destination is not a string"])),
        ("msgpack", msgpack.packb(["", "x" * 5000])),  # over max_packet
        ("msgpack", b"\xc1\xc1\xc1"),  # never-used msgpack byte
        ("msgpack", msgpack.packb([b"\xff"]).replace(b"\xc4", b"\xa1", 1)),  # invalid UTF-8
        ("json", b'["",]'),
    ],
    ids=["not-array", "bad-destination", "too-big", "invalid-msgpack", "bad-utf8", "bad-json"],
)
async def test_bad_packets(
    server: tuple[aemp.Node, aemp.Node], framing: str, payload: bytes
) -> None:
    srv, good = server
    reader, writer = await handshaken(srv, framing)
    writer.write(payload)
    assert await closed_by_peer(reader)
    writer.close()
    await still_serving(srv, good)


async def test_good_raw_peer_can_talk(server: tuple[aemp.Node, aemp.Node]) -> None:
    srv, _ = server
    got: list[object] = []
    p = srv.port(got.append)
    _, writer = await handshaken(srv)
    writer.write(msgpack.packb([p.partition("#")[2], "hi"]) + msgpack.packb(["no_such", 1]))
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.005)
    assert got == ["hi"]
    writer.close()


async def test_malformed_database_requests(
    server: tuple[aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    """Logged and ignored one by one: the connection stays, the database is intact."""
    srv, good = server
    good.db_set("svc", "k", 1)
    async with asyncio.timeout(5):
        while await srv.db_family("svc") != {"k": 1}:
            await asyncio.sleep(0.005)
    reader, writer = await handshaken(srv)
    bad = [
        ["", "g_upd", 5, {"a": 1}],
        ["", "g_upd", "svc", [1, 2]],
        ["", "g_upd", "svc", {"a": 1}, "not a list"],
        ["", "g_upd", "svc", None, [5]],
        ["", "g_upd", "", {"a": 1}],
        ["", "g_slave", "not a dict"],
        ["", "g_slave", {"svc": [1]}],
        ["", "g_set", 3],
        ["", "g_mon1"],
        ["", "g_mon1", {"x": 1}],
        ["", "g_db_keys", "svc"],
        ["", "g_db_family", ["svc"], "q0"],
        ["", "g_find"],
        ["", "g_chg1", "svc", "x"],
        ["", "g_reply", "zz"],
        ["", "g_global", "extra", "args"],
        ["", "g_nonsense", 1],
    ]
    writer.write(b"".join(msgpack.packb(p) for p in bad))
    writer.write(msgpack.packb(["", "g_db_family", "svc", "q1"]))
    unpacker = msgpack.Unpacker(raw=False)
    async with asyncio.timeout(5):
        while True:
            data = await reader.read(65536)
            assert data, "the node closed the connection"
            unpacker.feed(data)
            replies = [p for p in unpacker if p[:2] == ["", "g_reply"]]
            if replies:
                break
    assert replies == [["", "g_reply", "q1", {"k": 1}]]
    logged = [r for r in caplog.records if "from raw" in r.getMessage()]
    # each is logged but g_chg1 and g_reply, ignored unheard from anyone but the master
    assert len(logged) == len(bad) - 2, [r.getMessage() for r in logged]
    assert await srv.db_family("svc") == {"k": 1}
    assert await good.db_family("svc") == {"k": 1}
    writer.close()
    await still_serving(srv, good)


@pytest.mark.parametrize("nodeid", ["evil#port", "two words", "tab\there"])
async def test_peer_with_an_invalid_node_id(
    server: tuple[aemp.Node, aemp.Node], nodeid: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv, good = server
    reader, writer = await raw(srv)
    conn = wire.Connection(
        wire.Settings(nodeid="placeholder", provider="test", secret=SECRET),
        peeraddr=srv.listeners[0],
    )
    conn.start()
    writer.write(conn.data_to_send().replace(b"placeholder", nodeid.encode(), 1))
    assert await closed_by_peer(reader)
    writer.close()
    assert not srv.node_is_up(nodeid)
    assert any("is not valid (no '#'" in r.getMessage() for r in caplog.records)
    await still_serving(srv, good)
