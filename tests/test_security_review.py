"""Second look at what a peer with the secret may do: answers, callbacks, names.

Like test_security.py: a victim node and hostile nodes in one process,
over TCP on 127.0.0.1, sending what a hostile peer would send.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spawn_targets
from conftest import Recorder
from test_remote import wait_up
from test_security import SECRET, SPAWN, death_of, fresh_name, pair, sync, touch, victim_and_peer

import aemp
from aemp import lowlevel, testing
from aemp._config import Config

__all__ = ["pair"]  # the fixture, imported for the tests below

NO_SUCH_PORT = "no_such_port"


def echo_server(victim: aemp.Node) -> str:
    """A port whose callback answers with whatever the asker sent: snd(reply, *words)."""
    return victim.port(echo=lambda reply, *words: victim.snd(reply, *words))


async def echoed(peer: aemp.Node, echo: str) -> None:
    """What the echo port passed to the victim's own node port before has been handled.

    The echo port sends a "time" request to the victim's node port, which the
    victim handles after those before it (its run queue is FIFO), twice: the
    second round also comes after what the first ones queued (a spawn's init).
    """
    for _ in range(2):
        got = Recorder()
        peer.snd(echo, "echo", "victim", "time", peer.port(got))
        await got.wait()


# ---------------------------------------------------------------- answers as requests


@pytest.mark.parametrize("ask", [["can", 0], ["time"], ["up_nodes"]])
async def test_an_answer_to_the_node_port_is_not_a_request(tmp_path: Path, ask: list[Any]) -> None:
    """["", "can", 0, <victim>, <spawn request>] made the victim spawn for itself,
    past secure: the answer False became subprocess.run's second argument."""
    command, pwned = touch(tmp_path)
    gen = victim_and_peer(secure=True)
    _victim, peer = await gen.__anext__()
    try:
        for node_port in ("victim", "victim#"):
            name = fresh_name(peer)
            argv = command.split()
            peer.snd("victim", *ask, node_port, SPAWN, name, "subprocess:run", argv)
            assert await death_of(peer, f"victim#{name}") == (
                NO_SUCH_PORT,
                "cannot monitor nonexistent port",
                f"victim#{name}",
            )
        await sync(peer)
        assert not pwned.exists()
        # an answer to a port still goes there
        got = Recorder()
        peer.snd("victim", *ask, peer.port(got), "tag")
        assert (await got.wait())[0][0] == "tag"
    finally:
        await gen.aclose()


async def test_an_answer_is_not_sent_to_a_third_nodes_node_port() -> None:
    """It would reach the third node as a request of the victim's own."""
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:  # noqa: SIM117
        async with (
            aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer,
            aemp.Node(nodeid="third", seeds=victim.listeners, secret=SECRET) as third,
        ):
            await wait_up(victim, "third")
            await wait_up(peer, "victim")
            got = Recorder()
            port = third.port(got)
            for node_port in ("third", "third#"):
                peer.snd("victim", "can", 0, node_port, "snd", port, "forged")
            peer.snd("victim", "snd", port, "message")  # behind them, on the same links
            await got.wait()
            await sync(peer)
            assert got.calls == [("message",)]


# ---------------------------------------------------------------- callbacks as deputies


async def test_a_callback_answering_to_the_node_port_cannot_spawn(
    pair: tuple[aemp.Node, aemp.Node], tmp_path: Path
) -> None:
    """snd(reply, *words) with reply = the victim's node ID: a request in the
    node's own name, built by the peer. It meets the spawn policy."""
    victim, peer = pair
    echo = echo_server(victim)
    command, pwned = touch(tmp_path)
    name = fresh_name(peer)
    peer.snd(echo, "echo", "victim", SPAWN, name, "subprocess:run", command.split())
    name2 = fresh_name(peer)
    peer.snd(echo, "echo", "victim", SPAWN, name2, "spawn_targets:unmarked", "deputy")
    await echoed(peer, echo)
    assert not pwned.exists()
    assert ("unmarked ran", "deputy") not in spawn_targets.events
    assert f"victim#{name2}" not in lowlevel.ports(victim)
    # a marked function still runs that way: the peer could spawn it anyway
    name3 = fresh_name(peer)
    peer.snd(echo, "echo", "victim", SPAWN, name3, "spawn_targets:echo_init", "ok")
    assert await peer.cal(f"victim#{name3}", "echo", timeout=5) == ("ok",)


async def test_a_callback_answering_to_the_node_port_cannot_write_the_database(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    """A g_upd from the node's own code was an entry of the global itself."""
    victim, peer = pair
    assert victim.is_global
    echo = echo_server(victim)
    peer.snd(echo, "echo", "victim", "g_upd", "forged", {"k": "v"}, [])
    peer.snd(echo, "echo", "victim", "g_slave", {"forged": {"k2": 1}})
    await echoed(peer, echo)
    assert await victim.db_keys("forged", timeout=5) in (None, [])


# ---------------------------------------------------------------- the spawn policy


@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A module with a public, a private and a module-level __getattr__ function."""
    (tmp_path / "aemp_sec_lazy.py").write_text(
        "import aemp\n"
        "events = []\n\n"
        "def public(tag):\n"
        "    events.append(('public', tag))\n"
        "    aemp.kil(aemp.SELF.get())\n\n"
        "def _private(tag):\n"
        "    events.append(('_private', tag))\n"
        "    aemp.kil(aemp.SELF.get())\n\n"
        "def __getattr__(name):  # as a package that imports its parts when asked\n"
        "    events.append(('__getattr__', name))\n"
        "    aemp.kil(aemp.SELF.get())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("aemp_sec_lazy")
    yield module
    del sys.modules["aemp_sec_lazy"]


async def test_module_star_leaves_out_private_names_and_module_getattr(
    lazy_module: types.ModuleType,
) -> None:
    gen = victim_and_peer(spawn_allow=["aemp_sec_lazy:*"])
    _victim, peer = await gen.__anext__()
    try:
        for target in ("aemp_sec_lazy:_private", "aemp_sec_lazy:__getattr__"):
            reason = await death_of(peer, peer.spawn("victim", target, "os"))
            assert reason[1].startswith(f"SpawnRefused: {target!r} is not marked"), reason
        await death_of(peer, peer.spawn("victim", "aemp_sec_lazy:public", "p"))  # it ran, ended
        assert lazy_module.events == [("public", "p")]
    finally:
        await gen.aclose()


async def test_the_walk_runs_no_property_under_a_classmethod(
    pair: tuple[aemp.Node, aemp.Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """classmethod(property(f)): classmethod.__get__ ran f (Python 3.9 to 3.12)."""
    _victim, peer = pair
    ran: list[Any] = []

    class Config:
        pass

    Config.setting = classmethod(property(lambda cls: ran.append(cls)))  # type: ignore[attr-defined]
    module = types.ModuleType("aemp_sec_props")
    module.Config = Config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aemp_sec_props", module)
    reason = await death_of(peer, peer.spawn("victim", "aemp_sec_props:Config.setting"))
    assert reason[1].startswith("SpawnRefused: "), reason
    assert ran == []


@pytest.mark.parametrize(
    "target",
    [
        "os::system",  # Perl's spelling
        "spawn_targets:Holder.__init__",
        "spawn_targets:Holder.__init__.__globals__",
        "spawn_targets:Holder.__class__",  # type, through the metaclass
        "spawn_targets:__builtins__",
        "spawn_targets:__loader__.load_module",
        "spawn_targets:aemp.spawnable",  # an imported module's function
        "spawn_targets:asyncio.run",
        "spawn_targets:\uff45cho_init",  # a full-width e: Python source would read echo_init
        "spawn_targets:echo_\uff49nit",
    ],
)
async def test_targets_around_the_mark_are_refused(
    pair: tuple[aemp.Node, aemp.Node], target: str
) -> None:
    _victim, peer = pair
    try:
        port = peer.spawn("victim", target)
    except aemp.SpawnError:
        # not even a target here; the victim must refuse it all the same
        name = fresh_name(peer)
        peer.snd("victim", SPAWN, name, target)
        port = f"victim#{name}"
    reason = await death_of(peer, port)
    assert reason[0] == "die" and reason[1].startswith(("SpawnRefused: ", "SpawnError: ")), reason


async def test_a_refusal_says_where_and_what_to_do(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _victim, peer = pair
    reason = await death_of(peer, peer.spawn("victim", "spawn_targets::unmarked", "x"))
    assert reason == (
        "die",
        "SpawnRefused: 'spawn_targets::unmarked' is not marked spawnable and not in "
        "spawn_allow on node victim (mark the function @aemp.spawnable, or add "
        "'spawn_targets:unmarked' to that node's spawn_allow)",
    )


async def test_a_huge_target_makes_no_huge_log_line(
    pair: tuple[aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    _victim, peer = pair
    for target in ("spawn_targets:" + "x" * 100_000, "not a target " * 10_000):
        name = fresh_name(peer)
        peer.snd("victim", SPAWN, name, target)
        reason = await death_of(peer, f"victim#{name}")
        assert reason[0] == "die" and len(reason[1]) < 500, reason[1][:100]
    refusals = [r for r in caplog.records if "refused spawn" in r.getMessage()]
    assert len(refusals) == 2
    assert all(len(r.getMessage()) < 1000 for r in refusals)


# ---------------------------------------------------------------- names


async def test_a_peer_cannot_take_over_another_spawners_names() -> None:
    """A third node that saw a spawned port's name jumps its counter ahead:
    every later spawn of that spawner on the victim was refused."""
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:  # noqa: SIM117
        async with (
            aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer,
            aemp.Node(nodeid="third", seeds=victim.listeners, secret=SECRET) as third,
        ):
            await wait_up(peer, "victim")
            await wait_up(third, "victim")
            seen = peer.spawn("victim", "spawn_targets:echo_init", "first")
            assert await peer.cal(seen, "echo", timeout=5) == ("first",)
            prefix = seen.partition("#")[2].rstrip("abcdefghijklmnopqrstuvwxyz")
            third.snd("victim", SPAWN, prefix + "z" * 100, "spawn_targets:echo_init", "hijack")
            assert await third.cal("victim", "time", timeout=5)
            assert f"victim#{prefix}{'z' * 100}" not in lowlevel.ports(victim)
            later = peer.spawn("victim", "spawn_targets:echo_init", "later")
            assert await peer.cal(later, "echo", timeout=5) == ("later",)


async def test_only_the_spawner_hears_why_its_spawn_failed() -> None:
    async with aemp.Node(nodeid="victim", binds=["127.0.0.1:0"], secret=SECRET) as victim:  # noqa: SIM117
        async with (
            aemp.Node(nodeid="peer", seeds=victim.listeners, secret=SECRET) as peer,
            aemp.Node(nodeid="third", seeds=victim.listeners, secret=SECRET) as third,
        ):
            await wait_up(peer, "victim")
            await wait_up(third, "victim")
            port = peer.spawn("victim", "spawn_targets:failing_init")
            assert await death_of(peer, port) == ("die", "ValueError: init failed")
            assert (await death_of(third, port))[0] == NO_SUCH_PORT
            assert await death_of(peer, port) == ("die", "ValueError: init failed")


# ---------------------------------------------------------------- first-time users


@pytest.mark.parametrize(
    ("entry", "write"),
    [("workers", "workers:*"), ("eg.workers", "eg.workers:*"), ("eg.workers.*", "eg.workers:*")],
)
def test_an_old_style_spawn_allow_entry_says_what_to_write(entry: str, write: str) -> None:
    with pytest.raises(aemp.ConfigError) as e:
        Config.from_keys({"spawn_allow": [entry]})
    assert f"spawn_allow entry {entry!r} is not valid" in str(e.value)
    assert str(e.value).endswith(
        f"for the functions defined in module {write[:-2]!r}, write {write!r}"
    )


# ---------------------------------------------------------------- pinned: relays seen to hold


@pytest.mark.parametrize("spelling", [" victim", "victim ", "VICTIM", "Victim#", "victim#\t"])
async def test_odd_spellings_of_the_node_port_are_not_relayed(
    pair: tuple[aemp.Node, aemp.Node], spelling: str, caplog: pytest.LogCaptureFixture
) -> None:
    _victim, peer = pair
    with caplog.at_level(logging.WARNING, logger="aemp"):
        name = fresh_name(peer)
        peer.snd("victim", "snd", spelling, SPAWN, name, "spawn_targets:echo_init", "x")
        await sync(peer)
    assert f"victim#{name}" not in lowlevel.ports(_victim)


@pytest.mark.parametrize("name", ["Q a", "Q\na", "Q;a", "Q\x00a", "Q\ta", "Q\u2028a"])
async def test_a_spawned_name_must_make_a_valid_port_id(
    pair: tuple[aemp.Node, aemp.Node], name: str
) -> None:
    """Else the node's own API refuses the ID, and a log line shows a newline raw."""
    victim, peer = pair
    peer.snd("victim", SPAWN, name, "spawn_targets:echo_init", "odd")
    reason = await death_of_raw(peer, name)
    assert reason[1].startswith("SpawnRefused: port name "), reason
    assert reason[1].endswith("has a character a port ID cannot hold")
    assert f"victim#{name}" not in lowlevel.ports(victim)


async def death_of_raw(peer: aemp.Node, name: str) -> tuple[Any, ...]:
    """death_of for a name that peer.mon would refuse: the raw mon1 and its kil0."""
    got = Recorder()
    testing.monitor_raw(peer, "victim", name, got)  # as peer.mon would, without the ID check
    await got.wait()
    return got.calls[0]


async def test_a_marked_function_runs_under_the_name_of_a_module_that_imports_it(
    pair: tuple[aemp.Node, aemp.Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark is on the function, so "alias:echo_init" runs it as
    "spawn_targets:echo_init" would; nothing unmarked comes with it."""
    _victim, peer = pair
    alias = types.ModuleType("aemp_sec_alias")
    alias.echo_init = spawn_targets.echo_init  # type: ignore[attr-defined]
    alias.unmarked = spawn_targets.unmarked  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aemp_sec_alias", alias)
    port = peer.spawn("victim", "aemp_sec_alias:echo_init", "alias")
    assert await peer.cal(port, "echo", timeout=5) == ("alias",)
    reason = await death_of(peer, peer.spawn("victim", "aemp_sec_alias:unmarked", "x"))
    assert reason[1].startswith("SpawnRefused: "), reason
