"""What a peer with the secret may not do: relays, spawns, guessed names.

Each test runs a victim node and a hostile node in one process, talking TCP
on 127.0.0.1, and sends exactly what a hostile peer would send: the public
API where it suffices, raw packets where the peer would forge them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import spawn_targets
from conftest import Recorder
from test_remote import wait_up

import aemp
from aemp import lowlevel, testing
from aemp._config import Config

SECRET = "test-secret"
SPAWN = "AnyEvent::MP::_spawn"
LOWER = "abcdefghijklmnopqrstuvwxyz"


async def victim_and_peer(**victim_keys: Any) -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET, **victim_keys) as v:  # noqa: SIM117
        async with aemp.Node(nodeid="peer", seeds=v.listeners, secret=SECRET) as p:
            await wait_up(p, "victim")
            await wait_up(v, "peer")
            yield v, p


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async for nodes in victim_and_peer():
        yield nodes


@pytest.fixture
async def secure_pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async for nodes in victim_and_peer(secure=True):
        yield nodes


@pytest.fixture
async def allow_pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async for nodes in victim_and_peer(spawn_allow=["spawn_targets:echo_init"]):
        yield nodes


def successor(name: str) -> str:
    """The name after `name` in the a, ..., z, aa, ... count (as Perl's ++ counts)."""
    prefix = name.rstrip(LOWER)
    digits = list(name[len(prefix) :])
    i = len(digits) - 1
    while i >= 0 and digits[i] == "z":
        digits[i] = "a"
        i -= 1
    if i < 0:
        digits.insert(0, "a")
    else:
        digits[i] = chr(ord(digits[i]) + 1)
    return prefix + "".join(digits)


def fresh_name(peer: aemp.Node) -> str:
    """A spawn name the peer has not used: what its next spawn() would send."""
    return testing.take_names(peer)["spawn"].partition("#")[2]


async def death_of(peer: aemp.Node, port: str) -> tuple[Any, ...]:
    """Monitor a port from the peer and wait for its one death notice."""
    rec = Recorder()
    peer.mon(port, rec)
    await rec.wait()
    return rec.calls[0]


async def sync(peer: aemp.Node) -> None:
    """A round trip: what the peer sent the victim before has been handled."""
    assert await peer.cal("victim", "time", timeout=5)


# ---------------------------------------------------------------- item 5: relays


def touch(tmp_path: Path) -> tuple[str, Path]:
    target = tmp_path / "pwned"
    return f"touch {target}", target


async def test_relayed_spawn_is_refused_by_a_secure_node(
    secure_pair: tuple[aemp.Node, aemp.Node], tmp_path: Path
) -> None:
    _victim, peer = secure_pair
    command, pwned = touch(tmp_path)
    name = fresh_name(peer)
    # snd(victim, "snd", victim, <spawn request>): the victim relays to itself
    peer.snd("victim", "snd", "victim", SPAWN, name, "os:system", command)
    reason = await death_of(peer, f"victim#{name}")
    assert reason[0] == "die" and reason[1].startswith("SpawnRefused: node victim refuses")
    assert not pwned.exists()


async def test_relayed_spawn_obeys_spawn_allow(
    allow_pair: tuple[aemp.Node, aemp.Node], tmp_path: Path
) -> None:
    _victim, peer = allow_pair
    command, pwned = touch(tmp_path)
    for target in ("os:system", "spawn_targets:system", "spawn_targets:os.system"):
        name = fresh_name(peer)
        peer.snd("victim", "snd", "victim", SPAWN, name, target, command)
        reason = await death_of(peer, f"victim#{name}")
        assert reason[0] == "die" and reason[1].startswith("SpawnRefused: "), (target, reason)
    assert not pwned.exists()
    # what the list allows still runs, relayed or not
    name = fresh_name(peer)
    peer.snd("victim", "snd", "victim", SPAWN, name, "spawn_targets:echo_init", "R")
    assert await peer.cal(f"victim#{name}", "echo", 1, timeout=5) == ("R", 1)


async def test_a_chain_of_relays_keeps_the_link_authority(
    secure_pair: tuple[aemp.Node, aemp.Node], tmp_path: Path
) -> None:
    _victim, peer = secure_pair
    command, pwned = touch(tmp_path)
    for depth in (2, 3, 50_000):
        name = fresh_name(peer)
        relays = ["snd", "victim#"] * depth  # "victim#" is the node port too
        peer.snd("victim", *relays, SPAWN, name, "os:system", command)
        reason = await death_of(peer, f"victim#{name}")
        assert reason[1].startswith("SpawnRefused: "), (depth, reason)
    assert not pwned.exists()


async def test_a_relay_to_a_port_is_a_message(pair: tuple[aemp.Node, aemp.Node]) -> None:
    victim, peer = pair
    got = Recorder()
    mine = peer.port(got)
    theirs = Recorder()
    port = victim.port(theirs)
    peer.snd("victim", "snd", port, "to", "victim's port")
    peer.snd("victim", "snd", mine, "back", "to the peer")  # relayed over the victim
    await got.wait()
    await theirs.wait()
    assert got.calls == [("back", "to the peer")]
    assert theirs.calls == [("to", "victim's port")]


async def test_a_node_request_is_not_relayed_to_a_third_node() -> None:
    """Relayed on, the request would reach the third node as the relay's own."""
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:  # noqa: SIM117
        async with (
            aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer,
            aemp.Node(nodeid="third", seeds=victim.listeners, secret=SECRET) as third,
        ):
            await wait_up(victim, "third")
            await wait_up(peer, "victim")
            got = Recorder()
            port = third.port(got)
            # refused: a node request for "third", and the same spelled "third#"
            peer.snd("victim", "snd", "third", "snd", port, "relayed request")
            peer.snd("victim", "snd", "third#", "snd", port, "relayed request")
            # relayed: a message, sent behind the two on the same links
            peer.snd("victim", "snd", port, "message")
            await got.wait()
            await sync(peer)
            assert got.calls == [("message",)]


async def test_a_relayed_g_upd_belongs_to_the_peer() -> None:
    """The entry is the peer's, and vanishes when the peer goes; it was the global's."""
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:
        assert victim.is_global
        seen = Recorder()
        victim.db_mon("forged", lambda fam, added, changed, deleted: seen(added, deleted))
        async with aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer:
            await wait_up(peer, "victim")
            peer.snd("victim", "snd", "victim", "g_upd", "forged", {"k": "v"}, [])
            await seen.wait(2)  # the first call (empty), then the entry
            assert seen.calls[1] == (["k"], [])
        await seen.wait(3)
        # gone with the peer: not the global's own entry, which would have stayed
        assert seen.calls[2] == ([], ["k"])
        assert await victim.db_keys("forged", timeout=5) in (None, [])


async def test_a_relayed_g_slave_belongs_to_the_peer() -> None:
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:
        seen = Recorder()
        victim.db_mon("forged", lambda fam, added, changed, deleted: seen(added, deleted))
        async with aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer:
            await wait_up(peer, "victim")
            peer.snd("victim", "snd", "victim", "g_slave", {"forged": {"k": 1}})
            await seen.wait(2)
            assert seen.calls[1] == (["k"], [])
        await seen.wait(3)
        assert seen.calls[2] == ([], ["k"])
        assert victim.is_global
        assert await victim.db_keys("forged", timeout=5) in (None, [])


# ---------------------------------------------------------------- item 7: the default


@pytest.mark.parametrize(
    "target",
    [
        "os:system",
        "subprocess:run",
        "builtins:exec",
        "spawn_targets:unmarked",
        "spawn_targets:system",  # os.system under another module's name
        "spawn_targets:os.system",
        "spawn_targets:Holder",  # a class is not a marked function
    ],
)
async def test_by_default_a_peer_runs_only_marked_functions(
    pair: tuple[aemp.Node, aemp.Node], target: str, tmp_path: Path
) -> None:
    _victim, peer = pair
    command, pwned = touch(tmp_path)
    port = peer.spawn("victim", target, command)
    reason = await death_of(peer, port)
    assert reason[0] == "die"
    assert reason[1].startswith(
        f"SpawnRefused: {target!r} is not marked spawnable and not in spawn_allow on node victim"
    )
    assert not pwned.exists()
    assert ("unmarked ran", command) not in spawn_targets.events


async def test_a_peer_runs_marked_functions_and_methods(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _victim, peer = pair
    echo = peer.spawn("victim", "spawn_targets:echo_init", "E")
    assert await peer.cal(echo, "echo", 1, timeout=5) == ("E", 1)
    static = peer.spawn("victim", "spawn_targets:Holder.init")
    assert await peer.cal(static, "ping", timeout=5) == ("pong",)
    cls = peer.spawn("victim", "spawn_targets:Holder.make", "C")
    assert await peer.cal(cls, "ping", timeout=5) == ("pong", "Holder", "C")
    perl = peer.spawn("victim", "spawn_targets::echo_init", "P")  # Perl's spelling
    assert await peer.cal(perl, "echo", timeout=5) == ("P",)


async def test_a_peer_cannot_make_the_node_import_a_module(
    pair: tuple[aemp.Node, aemp.Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _victim, peer = pair
    (tmp_path / "aemp_sec_unloaded.py").write_text(
        "import aemp\n\n@aemp.spawnable\ndef f(reply):\n    aemp.snd(reply, 'ran')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reason = await death_of(peer, peer.spawn("victim", "aemp_sec_unloaded:f"))
    assert reason[1].startswith("SpawnRefused: module 'aemp_sec_unloaded' is not loaded")
    assert "aemp_sec_unloaded" not in sys.modules
    # once the node itself loaded it, the marked function may run
    __import__("aemp_sec_unloaded")
    try:
        ran = Recorder()
        peer.spawn("victim", "aemp_sec_unloaded:f", peer.port(ran))
        assert await ran.wait() == [("ran",)]
    finally:
        del sys.modules["aemp_sec_unloaded"]


async def test_local_spawn_is_not_restricted(node: aemp.Node) -> None:
    port = node.spawn(node.id, "spawn_targets:unmarked", "local")
    rec = Recorder()
    node.mon(port, rec)
    await rec.wait()
    assert ("unmarked ran", "local") in spawn_targets.events


async def test_spawn_allow_star_allows_everything_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="aemp"):
        gen = victim_and_peer(spawn_allow=["*"])
        _victim, peer = await gen.__anext__()
        try:
            assert "spawn_allow has '*'" in caplog.text
            port = peer.spawn("victim", "spawn_targets:unmarked", "star")
            await death_of(peer, port)
            assert ("unmarked ran", "star") in spawn_targets.events
        finally:
            await gen.aclose()


def test_spawnable_marks_functions_only() -> None:
    with pytest.raises(TypeError, match=r"@spawnable marks functions .* got 42, a int"):
        aemp.spawnable(42)
    with pytest.raises(TypeError, match=r"a type"):
        aemp.spawnable(spawn_targets.Holder)

    def f() -> None: ...

    assert aemp.spawnable(f) is f


# ---------------------------------------------------------------- item 6: spawn_allow forms


async def test_module_star_allows_only_functions_defined_there(
    tmp_path: Path,
) -> None:
    command, pwned = touch(tmp_path)
    gen = victim_and_peer(spawn_allow=["spawn_targets:*"])
    _victim, peer = await gen.__anext__()
    try:
        for target in ("spawn_targets:os.system", "spawn_targets:system"):
            reason = await death_of(peer, peer.spawn("victim", target, command))
            assert reason[1].startswith("SpawnRefused: "), target
        assert not pwned.exists()
        port = peer.spawn("victim", "spawn_targets:unmarked", "module star")
        await death_of(peer, port)
        assert ("unmarked ran", "module star") in spawn_targets.events
    finally:
        await gen.aclose()


async def test_an_exact_entry_names_one_function_and_may_import_it(tmp_path: Path) -> None:
    gen = victim_and_peer(spawn_allow=["spawn_targets:unmarked", "no_such_module_xyz:f"])
    _victim, peer = await gen.__anext__()
    try:
        port = peer.spawn("victim", "spawn_targets:unmarked", "exact")
        await death_of(peer, port)
        assert ("unmarked ran", "exact") in spawn_targets.events
        reason = await death_of(peer, peer.spawn("victim", "no_such_module_xyz:f"))
        assert reason == ("die", "ModuleNotFoundError: No module named 'no_such_module_xyz'")
        reason = await death_of(peer, peer.spawn("victim", "spawn_targets:system", "x"))
        assert reason[1].startswith("SpawnRefused: ")
    finally:
        await gen.aclose()


@pytest.mark.parametrize("entry", ["workers", "a.b", "a:b:c", "a:*.x", "**", "a.*:f", ""])
def test_spawn_allow_entries_are_checked(entry: str) -> None:
    with pytest.raises(aemp.ConfigError, match=r"spawn_allow.*'package\.module:function'"):
        Config.from_keys({"spawn_allow": [entry]})


def test_spawn_allow_forms() -> None:
    from aemp._spawn import SpawnPolicy

    policy = SpawnPolicy(False, ["a.b:f", "a.b:C.m", "c:*", "Perl::Mod::g", "Perl::Mod::*", "*"])
    assert policy.allow == {
        ("a.b", "f"),
        ("a.b", "C.m"),
        ("c", "*"),
        ("Perl.Mod", "g"),
        ("Perl.Mod", "*"),
        ("*", "*"),
    }
    assert policy.anything


# ---------------------------------------------------------------- item 10: the real reason


@pytest.mark.parametrize(
    ("target", "args", "reason"),
    [
        ("spawn_targets:failing_init", (), "ValueError: init failed"),
        ("spawn_targets:slow_failing_init", (), "ValueError: async init failed"),
        ("spawn_targets:echo_init", (), "TypeError: echo_init() missing 1 required"),
        ("spawn_targets:missing", (), "SpawnRefused: 'spawn_targets:missing' is not marked"),
    ],
)
async def test_a_late_monitor_gets_the_real_reason(
    pair: tuple[aemp.Node, aemp.Node], target: str, args: tuple[Any, ...], reason: str
) -> None:
    """The mon1 comes after the spawn failed on the host: it still hears why."""
    victim, peer = pair
    port = peer.spawn("victim", target, *args)
    await sync(peer)  # the request was handled on the host
    gone = Recorder()
    victim.mon(port, gone)
    await gone.wait()  # and the port is gone before the peer's monitor comes
    got = await death_of(peer, port)
    assert got[0] == "die" and got[1].startswith(reason), got


async def test_a_monitor_right_behind_the_spawn_gets_the_real_reason(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    _victim, peer = pair
    port = peer.spawn("victim", "spawn_targets:failing_init")
    assert await death_of(peer, port) == ("die", "ValueError: init failed")
    with pytest.raises(aemp.PortDead) as e:
        await peer.cal(peer.spawn("victim", "os:system", "true"), "x", timeout=5)
    assert e.value.reason[1].startswith("SpawnRefused: ")


def test_the_remembered_reasons_are_bounded() -> None:
    from aemp._spawn import MAX_DEATH_TEXT, MAX_SPAWN_DEATHS, SpawnBook

    book = SpawnBook(())
    for i in range(MAX_SPAWN_DEATHS + 10):
        book.died(f"P{i}a", ("die", "x" * 10_000, "more"), "n")
    assert len(book.deaths) == MAX_SPAWN_DEATHS
    assert book.death("P0a", "n") is None
    assert book.death(f"P{MAX_SPAWN_DEATHS + 9}a", "n") == ("die", "x" * MAX_DEATH_TEXT)


# ---------------------------------------------------------------- item 8: names


async def test_reply_ports_cannot_be_guessed() -> None:
    """A peer that saw one of our reply ports cannot answer our next call to a third node."""
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:  # noqa: SIM117
        async with (
            aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer,
            aemp.Node(nodeid="third", seeds=victim.listeners, secret=SECRET) as third,
        ):
            await wait_up(victim, "peer")
            await wait_up(victim, "third")
            seen: list[str] = []
            spy = peer.port(ask=lambda reply: (seen.append(reply), peer.snd(reply, "spy")))
            assert await victim.cal(spy, "ask", timeout=5) == ("spy",)
            pending: list[str] = []
            server = third.port(ask=pending.append)  # answers when the test says
            call = victim.cal(server, "ask", timeout=5)
            # the peer answers what the next reply ports would be, were they counted
            guess = seen[0]
            for _ in range(100):
                guess = successor(guess)
                peer.snd(guess, "forged")
            await sync(peer)
            assert not call.done()
            async with asyncio.timeout(5):
                while not pending:
                    await asyncio.sleep(0.005)
            third.snd(pending[0], "real")
            assert await call == ("real",)


def test_reply_port_names_never_repeat() -> None:
    from aemp._ids import _SECRET_BLOCK, SECRET_DIGITS, secret_names

    names = secret_names("n#abcdefghi1")
    many = [next(names) for _ in range(_SECRET_BLOCK * 5 + 3)]
    assert len(set(many)) == len(many)
    assert {len(n) for n in many[:_SECRET_BLOCK]} == {len("n#abcdefghi1a") + SECRET_DIGITS}


async def test_a_spawn_cannot_bring_a_dead_port_back(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _victim, peer = pair
    lower = fresh_name(peer)  # a name of the peer's that the victim never saw
    port = peer.spawn("victim", "spawn_targets:echo_init", "first")
    assert await peer.cal(port, "echo", timeout=5) == ("first",)
    peer.kil(port)
    assert await death_of(peer, port) == ()
    # the same name again, and a name below it with the same prefix
    peer.snd("victim", SPAWN, port.partition("#")[2], "spawn_targets:echo_init", "again")
    peer.snd("victim", SPAWN, lower, "spawn_targets:echo_init", "lower")
    await sync(peer)
    for p in (port, f"victim#{lower}"):
        with pytest.raises(aemp.PortDead):
            await peer.cal(p, "echo", timeout=5)
    # names above the mark still work
    assert await peer.cal(peer.spawn("victim", "spawn_targets:echo_init", "next"), "echo") == (
        "next",
    )


async def test_a_spawn_cannot_take_the_nodes_own_names(pair: tuple[aemp.Node, aemp.Node]) -> None:
    """The next local port, spawn and reply port names of the victim stay its own."""
    victim, peer = pair
    names = testing.take_names(victim)
    taken = [successor(victim.port()), names["local"], names["spawn"], names["reply"]]
    for pid in taken:
        peer.snd("victim", SPAWN, pid.partition("#")[2], "spawn_targets:echo_init", "hijack")
    await sync(peer)
    assert not set(taken) & set(lowlevel.ports(victim))


async def test_a_peer_cannot_fill_the_name_book_silently(
    pair: tuple[aemp.Node, aemp.Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aemp import _spawn

    _victim, peer = pair
    # The victim has taken no spawned names yet: room for one prefix, the
    # peer's (were the book not empty, the first spawn below would fail).
    monkeypatch.setattr(_spawn, "MAX_SPAWN_PREFIXES", 1)
    first = peer.spawn("victim", "spawn_targets:echo_init", "fits")
    assert await peer.cal(first, "echo", timeout=5) == ("fits",)
    peer.snd("victim", SPAWN, "OtherPrefiXa", "spawn_targets:echo_init", "full")
    reason = await death_of(peer, "victim#OtherPrefiXa")
    assert reason[1].startswith("SpawnRefused: this node took names of")
    # the peer's own prefix is known: its spawns go on
    assert await peer.cal(peer.spawn("victim", "spawn_targets:echo_init", "more"), "echo") == (
        "more",
    )


def test_spawn_names_count_as_aemp_and_anyevent_mp_count() -> None:
    from aemp._spawn import SpawnBook

    book = SpawnBook(("OWNlocal0a", "OWNspawnXa"))
    assert book.take("PrefiXy", "n") == (True, None)
    assert book.take("PrefiXz", "n") == (True, None)
    assert book.take("PrefiXaa", "n") == (True, None)  # z, then aa
    assert book.take("PrefiXz", "n") == (False, None)
    assert book.take("PrefiXaa", "n") == (False, None)
    # a Perl prefix may end in lower-case letters: they count as part of the counter
    assert book.take("Zq9xyc", "n") == (True, None)
    assert book.take("Zq9xyd", "n") == (True, None)
    assert book.take("Zq9xyaa", "n") == (True, None)
    assert book.take("Zq9xyc", "n") == (False, None)
    assert book.take("OWNlocal0azz", "n") == (False, None)
    taken, why = book.take("no-counter-1", "n")
    assert not taken and why is not None and "counter" in why
    taken, why = book.take("X" * 200 + "a", "n")
    assert not taken and why is not None and "longer than" in why
