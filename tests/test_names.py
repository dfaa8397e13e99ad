"""aemp.names: the API on each backend, with every error case of the Go
package name_manager's documentation (docs/names.md maps one to the other).

Each test runs on memory://, on aemp:// (two nodes linked in memory, both
global and serving the lease table) and on etcd:// (a real etcd server
started by the `etcd` fixture, a fresh key prefix per test).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from names_helpers import EtcdServer

import aemp
from aemp import names, testing

Make = Callable[..., Awaitable[names.NameManager]]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(Path(tmp_path_factory.mktemp("etcd")) / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "aemp", "etcd"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Opens managers on one backend: each call a new one (a new holder)."""
    opened: list[names.NameManager] = []
    kind = request.param
    async with testing.pair(monitor_timeout=2) as (a, b, _link):
        names.serve(a)
        names.serve(b)
        nodes = [a, b]
        url = {
            "memory": f"memory://{uuid.uuid4().hex}",
            "aemp": "aemp://",
            "etcd": f"{request.getfixturevalue('etcd').url if kind == 'etcd' else ''}"
            f"/t{uuid.uuid4().hex}",
        }[kind]

        async def make(ttl: float = 2.0) -> names.NameManager:
            extra = {"node": nodes[len(opened) % 2]} if kind == "aemp" else {}
            m = await names.open(url, ttl=ttl, **extra)
            opened.append(m)
            return m

        yield make
        for m in opened:
            await m.aclose()


async def test_fresh_names_are_the_smallest_free_numbers(make: Make) -> None:
    m, other = await make(), await make()
    got = [(await m.acquire("workers")).name for _ in range(3)]
    assert got == ["0", "1", "2"]
    assert (await other.acquire("workers")).name == "3"
    assert (await other.acquire("other")).name == "0"  # families are apart
    await m.release("workers", "1")
    assert (await other.acquire("workers")).name == "1"


async def test_tokens_grow_with_every_grant_of_a_name(make: Make) -> None:
    m, other = await make(), await make()
    first = await m.acquire("f")
    await m.release("f", first.name)
    second = await other.try_acquire("f", first.name)
    await other.release("f", first.name)
    third = await m.try_acquire("f", first.name)
    assert first.token < second.token < third.token


async def test_try_acquire_in_use_and_not_exist(make: Make) -> None:
    m, other = await make(), await make()
    await m.acquire("f")
    with pytest.raises(names.NameInUse, match="f/0 is held") as e:
        await other.try_acquire("f", "0")
    assert isinstance(e.value, aemp.AempError) and isinstance(e.value, RuntimeError)
    with pytest.raises(names.NameInUse):
        await other.try_hold("f", "0")
    with pytest.raises(names.NameNotExist, match="f/7 was never acquired") as e2:
        await other.try_acquire("f", "7")
    assert isinstance(e2.value, aemp.AempError) and isinstance(e2.value, LookupError)
    with pytest.raises(names.NameNotExist):
        await other.try_hold("f", "7")


async def test_release_of_a_free_or_unknown_name_is_no_error(make: Make) -> None:
    m = await make()
    await m.release("f", "never")
    lease = await m.acquire("f")
    await m.release("f", lease.name)
    await m.release("f", lease.name)
    assert [(n.name, n.free) for n in await m.list("f")] == [("0", True)]


async def test_a_released_name_can_be_acquired_again(make: Make) -> None:
    m, other = await make(), await make()
    await m.acquire("f")
    await m.release("f", "0")
    assert (await other.try_acquire("f", "0")).name == "0"


async def test_keep_alive_keeps_and_a_lapsed_lease_is_lost(make: Make) -> None:
    m, other = await make(ttl=2.0), await make()  # etcd's shortest lease is 2 s
    lease = await m.acquire("f")
    for _ in range(8):  # 4 s of renewals: longer than the ttl
        await asyncio.sleep(0.5)
        await m.keep_alive("f", lease.name)
    with pytest.raises(names.NameInUse):
        await other.try_acquire("f", lease.name)
    await asyncio.sleep(2.2)  # no renewal: the holder's deadline passes first
    with pytest.raises(names.NameLost, match="lapsed"):
        await m.keep_alive("f", lease.name)
    for _ in range(50):  # the backend frees it after the holder gave it up, not before
        try:
            later = await other.try_acquire("f", lease.name)
            break
        except names.NameInUse:
            await asyncio.sleep(0.1)
    assert later.token > lease.token


async def test_keep_alive_of_a_name_this_manager_does_not_hold(make: Make) -> None:
    m, other = await make(), await make()
    await other.acquire("f")
    with pytest.raises(names.NameLost, match="not held by this manager"):
        await m.keep_alive("f", "0")
    with pytest.raises(names.NameLost):
        await m.keep_alive("f", "never")


async def test_hold_keeps_the_name_alive_until_released(make: Make) -> None:
    m, other = await make(ttl=1.0), await make()
    async with await m.hold("f") as held:
        assert held.name == "0" and not held.lost
        await asyncio.sleep(2.5)
        with pytest.raises(names.NameInUse):
            await other.try_acquire("f", "0")
    assert (await other.try_acquire("f", "0")).token > held.token
    await held.release()  # again: nothing


async def test_a_holder_hears_through_its_errors_when_somebody_releases_its_name(
    make: Make,
) -> None:
    m, other = await make(ttl=1.0), await make()
    seen: list[Exception] = []
    held = await m.hold("f", on_error=seen.append)
    await other.release("f", held.name)  # the Go package's Release: anybody may
    errors = [e async for e in held.errors()]
    assert held.lost and isinstance(errors[-1], names.NameLost)
    assert seen[-1] is errors[-1]
    assert isinstance(await held.wait_lost(), names.NameLost)
    # the name is free for the other: held.release() does not take it back
    lease = await other.try_acquire("f", held.name)
    await held.release()
    with pytest.raises(names.NameInUse):
        await m.try_acquire("f", lease.name)


async def test_list_shows_free_and_held_names_with_their_times(make: Make) -> None:
    m = await make()
    assert await m.list() == []
    a = await m.acquire("f")
    await m.acquire("f")
    await m.acquire("g")
    await m.release("f", a.name)
    listed = await m.list()
    assert [(n.family, n.name, n.free) for n in listed] == [
        ("f", "0", True), ("f", "1", False), ("g", "0", False),
    ]  # fmt: skip
    assert all(0 < n.created_at <= n.updated_at for n in listed)
    assert listed[0].token == a.token
    assert [n.name for n in await m.list("g")] == ["0"]


async def test_reset_forgets_every_name_and_holders_lose_theirs(make: Make) -> None:
    m, other = await make(ttl=1.0), await make()
    held = await m.hold("f")
    await other.acquire("g")
    await other.reset()
    assert await other.list() == []
    errors = [e async for e in held.errors()]
    assert isinstance(errors[-1], names.NameLost)
    fresh = await other.acquire("f")
    assert fresh.name == "0" and fresh.token > held.token


async def test_bad_names_families_and_ttls(make: Make) -> None:
    m = await make()
    for bad in ("", "a/b", "x" * 201, "space here", "é"):
        with pytest.raises(names.InvalidName, match="must be 1 to 200 characters") as e:
            await m.acquire(bad)
        assert isinstance(e.value, ValueError)
        with pytest.raises(names.InvalidName):
            await m.try_acquire("f", bad)
    with pytest.raises(aemp.InvalidArgument, match="family must be a str"):
        await m.acquire(3)  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange, match=r"ttl must be from 0\.1 to 3600"):
        await make(ttl=0)
    with pytest.raises(aemp.InvalidArgument, match="ttl must be a number"):
        await make(ttl="5")
    assert await m.list() == []  # nothing was harmed


async def test_a_closed_manager_refuses_work(make: Make) -> None:
    m = await make()
    await m.aclose()
    with pytest.raises(names.BackendUnavailable, match="closed"):
        await m.acquire("f")
    await m.aclose()


async def test_urls_and_backends() -> None:
    assert [b.protocol for b in names.backends()] == ["aemp", "etcd", "memory"]
    assert all(b.description.startswith(f"{b.protocol}://") for b in names.backends())
    for url, match in [
        ("nowhere", "looks like PROTOCOL://"),
        ("foo://bar", r"no names backend for 'foo'://.*aemp://, etcd://, memory://"),
        ("etcd://localhost", "etcd:// wants host:port"),
        ("etcd://h:99999", "etcd:// wants host:port"),
        ("aemp://x", "takes nothing after the protocol"),
        ("aemp://", "needs node="),
    ]:
        with pytest.raises(names.UnknownBackend, match=match):
            await names.open(url)
    with pytest.raises(names.UnknownBackend, match="only the option ttl"):
        await names.open("memory://", colour="red")
    with pytest.raises(aemp.InvalidArgument):
        await names.open(b"memory://")  # type: ignore[arg-type]


async def test_a_backend_registers_by_protocol() -> None:
    async def create(rest: str, **options: object) -> names.NameManager:
        return await names.open(f"memory://{rest}")

    names.register_backend(names.Backend("test-mem", "test-mem://STORE: memory, renamed", create))
    m = await names.open("test-mem://x")
    assert m.url == "test-mem://x" and (await m.acquire("f")).name == "0"
    with pytest.raises(names.UnknownBackend, match="lower-case URL scheme"):
        names.register_backend(names.Backend("Bad Proto", "", create))
    with pytest.raises(aemp.InvalidArgument):
        names.register_backend("memory")  # type: ignore[arg-type]


async def test_etcd_unreachable_is_backend_unavailable(tmp_path: Path) -> None:
    from conftest import free_port

    m = await names.open(f"etcd://127.0.0.1:{free_port()}", request_timeout=1)
    with pytest.raises(names.BackendUnavailable, match="etcd unreachable") as e:
        await m.acquire("f")
    assert isinstance(e.value, ConnectionError) and e.value.__cause__ is not None
    await m.aclose()
