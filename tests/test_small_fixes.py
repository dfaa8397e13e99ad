"""Smaller promises: bad input named as the user gave it, lookups of
unknown nodes that back off, and the state of departed nodes forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

import aemp
from aemp._config import Config, check_value

SECRET = "test-secret"


async def wait_up(node: aemp.Node, other: str, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not node.node_is_up(other):
            await asyncio.sleep(0.005)


def nested(depth: int) -> list[Any]:
    x: list[Any] = []
    for _ in range(depth):
        x = [x]
    return x


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a:  # noqa: SIM117
        async with aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b:
            await wait_up(b, "a")
            yield a, b


# ---------------------------------------------------------------- 13a: nesting


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize("depth", [600, 2000, 100_000])
async def test_too_deep_to_a_remote_port_is_a_message_error(framing: str, depth: int) -> None:
    async with aemp.Node(  # noqa: SIM117
        nodeid="a", binds=["127.0.0.1:0"], secret=SECRET, framing_format=[framing]
    ) as a:
        async with aemp.Node(
            nodeid="b", seeds=a.listeners, secret=SECRET, framing_format=[framing]
        ) as b:
            await wait_up(b, "a")
            got: list[Any] = []
            p = a.port(lambda *m: got.append(m))
            deep = nested(depth)
            for msg in [("t", deep), (deep,), ("t", {"k": deep})]:
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    b.snd(p, *msg)  # the first send finds the route, the second takes it
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    b.snd(p, *msg)
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    a.snd(p, *msg)  # the local path says the same
            b.snd(p, "still", "fine")  # the link was not harmed
            async with asyncio.timeout(5):
                while not got:
                    await asyncio.sleep(0.005)
            assert got == [("still", "fine")]


async def test_a_peer_packet_too_deep_to_repr_closes_only_its_connection(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    # a packet that is a map nested 1020 deep: msgpack decodes it, but repr()
    # recursed past Python's limit while writing the error
    data = b"\x81\xa1k" * 1020 + b"\xc0"
    assert isinstance(msgpack.unpackb(data), dict)
    conn = next(c for c in b._net.conns if c.remote_id == "a")  # type: ignore[union-attr]
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    a.mon_nodes(lambda nodeid, up, *why: lost.done() or up or lost.set_result(str(why)))
    assert conn.transport is not None
    conn.transport.write(data)
    assert "packet is not an array" in await asyncio.wait_for(lost, 5)


# ---------------------------------------------------------------- 13b: nodeid ""


async def test_an_empty_node_id_is_refused() -> None:
    with pytest.raises(aemp.ConfigError, match=r"'nodeid' must not be empty \(got ''\)"):
        aemp.Node(nodeid="")
    with pytest.raises(aemp.ConfigError, match="'nodeid' must not be empty"):
        check_value("nodeid", "")
    async with aemp.Node(nodeid=None) as n:  # None (or nothing) is still anonymous
        assert n.id.startswith("anon/")


# ---------------------------------------------------------------- 13c: numbers


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("monitor_timeout", float("inf"), "from 0.1 to 86400"),
        ("monitor_timeout", float("nan"), "positive number of seconds"),
        ("monitor_timeout", 1e300, "from 0.1 to 86400"),
        ("monitor_timeout", 1e-9, "from 0.1 to 86400"),
        ("monitor_timeout", -1, "positive number of seconds"),
        ("monitor_timeout", "5", "positive number of seconds"),
        ("connect_interval", float("inf"), "from 0.01 to 86400"),
        ("connect_interval", 0, "positive number of seconds"),
        ("connect_interval", 1e-5, "from 0.01 to 86400"),
        ("max_packet", 10**30, "at most 4294967295 bytes"),
        ("max_packet", 1.5e6, "an int of at least 1024 bytes"),
        ("max_packet", 12, "an int of at least 1024 bytes"),
    ],
)
async def test_numeric_keys_are_checked_under_their_own_name(
    key: str, value: Any, expected: str
) -> None:
    for check in (
        lambda: aemp.Node(**{key: value}),
        lambda: Config.from_keys({key: value}),
        lambda: check_value(key, value),
    ):
        with pytest.raises(aemp.ConfigError) as info:
            check()
        text = str(info.value)
        assert text.startswith(f"{key!r} must be"), text
        assert repr(value) in text and expected in text, text
        assert "heartbeat" not in text


async def test_numeric_keys_at_their_bounds_work() -> None:
    async with aemp.Node(  # noqa: SIM117
        binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=86400, max_packet=2**32 - 1
    ) as a:
        async with aemp.Node(
            seeds=a.listeners, secret=SECRET, monitor_timeout=0.1, connect_interval=0.01
        ) as b:
            await wait_up(b, a.id)


# ---------------------------------------------------------------- 13d: addresses


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"seeds": ["127.0.0.1:99999"]}, "'seeds' entry '127.0.0.1:99999' is not valid"),
        ({"seeds": ["localhost"]}, "'seeds' entry 'localhost' is not valid"),
        ({"seeds": ["*:4040"]}, "'seeds' entry '*:4040' is not valid"),
        ({"seeds": ["h:x"]}, "'seeds' entry 'h:x' is not valid"),
        ({"binds": ["127.0.0.1:99999"]}, "'binds' entry '127.0.0.1:99999' is not valid"),
        ({"binds": ["h:x"]}, "'binds' entry 'h:x' is not valid"),
    ],
)
async def test_a_bad_address_names_its_key_and_value(keys: dict[str, Any], named: str) -> None:
    ((key, [value]),) = keys.items()
    for check in (
        lambda: aemp.Node(secret=SECRET, **keys),
        lambda: check_value(key, [value]),
    ):
        with pytest.raises(aemp.ConfigError, match="expected 'host:port'") as info:
            check()
        assert named in str(info.value)
        other = "bind" if key == "seeds" else "seed"
        assert other not in str(info.value)
