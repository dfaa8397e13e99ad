"""spawn on the local node."""

from __future__ import annotations

import pytest
import spawn_targets
from conftest import Recorder

import aemp


async def test_spawn_returns_id_at_once_and_runs_init_later(node: aemp.Node) -> None:
    spawn_targets.events.clear()
    pid = node.spawn(node.id, "spawn_targets:echo_init", "T")
    assert aemp.node_of(pid) == node.id
    assert spawn_targets.events == []
    # a message sent right after spawn is delivered after init set rcv
    assert await node.cal(pid, "echo", 1, 2) == ("T", 1, 2)
    assert spawn_targets.events == [("init", pid, "T")]


async def test_spawn_async_init(node: aemp.Node) -> None:
    pid = node.spawn(node.id, "spawn_targets:slow_init", "S")
    assert await node.cal(pid, "echo", "x") == ("S", "x")


async def test_spawn_attribute_path_and_perl_spelling(node: aemp.Node) -> None:
    a = node.spawn(node.id, "spawn_targets:Holder.init")
    assert await node.cal(a, "ping") == ("pong",)
    b = node.spawn(node.id, "spawn_targets::echo_init", "P")
    assert await node.cal(b, "echo") == ("P",)


async def test_spawn_init_exception_kills_port(node: aemp.Node) -> None:
    pid = node.spawn(node.id, "spawn_targets:failing_init")
    rec = Recorder()
    node.mon(pid, rec)
    await rec.wait()
    assert rec.calls == [("die", "ValueError: init failed")]


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module_xyz:f", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("spawn_targets:missing", "AttributeError: module 'spawn_targets' has no attribute"),
        ("spawn_targets:not_callable", "SpawnError: spawn target"),
    ],
)
async def test_spawn_unresolvable_target_kills_port(
    node: aemp.Node, target: str, error: str
) -> None:
    pid = node.spawn(node.id, target)
    rec = Recorder()
    node.mon(pid, rec)
    await rec.wait()
    assert rec.calls[0][0] == "die"
    assert rec.calls[0][1].startswith(error)


@pytest.mark.parametrize("target", ["nocolon", "a:b:c", "a.:f", ":f", "m:", 3, "m:f()", "a b:c"])
async def test_spawn_bad_target_raises_at_once(node: aemp.Node, target: object) -> None:
    with pytest.raises(aemp.SpawnError, match=r"expected 'package\.module:function'"):
        node.spawn(node.id, target)  # type: ignore[arg-type]


async def test_spawned_port_names_differ_from_local_ones(node: aemp.Node) -> None:
    local = node.port().partition("#")[2]
    spawned = node.spawn(node.id, "spawn_targets:echo_init", "x").partition("#")[2]
    assert local[9].islower() and spawned[9].isupper()
    assert local[:9] != spawned[:9]


async def test_spawn_args_must_be_plain_data(node: aemp.Node) -> None:
    with pytest.raises(aemp.MessageError):
        node.spawn(node.id, "spawn_targets:echo_init", object())
