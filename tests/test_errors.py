"""User mistakes raise at once with a message naming the bad value and what is right."""

from __future__ import annotations

from typing import Any

import pytest

import aemp


@pytest.mark.parametrize(
    "bad", ["", "#name", "a b#c", "a;b", "x\n", "a#b\tc", "a#\r", 5, None, b"node#p"]
)
async def test_malformed_port_ids(node: aemp.Node, bad: object) -> None:
    with pytest.raises(aemp.InvalidID) as ei:
        node.snd(bad, "x")  # type: ignore[arg-type]
    assert repr(bad) in str(ei.value)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(aemp.InvalidID):
        node.mon(bad, print)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidID):
        node.kil(bad)  # type: ignore[arg-type]


async def test_rcv_on_non_local_port(node: aemp.Node) -> None:
    with pytest.raises(aemp.NotLocalPort, match=r"got 'elsewhere#p1' of node 'elsewhere'"):
        node.rcv("elsewhere#p1", print)
    with pytest.raises(aemp.NotLocalPort, match="node port"):
        node.rcv(node.id, print)


async def test_rcv_on_dead_port(node: aemp.Node) -> None:
    p = node.port()
    node.kil(p)
    with pytest.raises(aemp.PortDead):
        node.rcv(p, print)


async def test_rcv_callbacks_must_be_callable(node: aemp.Node) -> None:
    with pytest.raises(TypeError, match="rcv callback for tag 'ping' must be callable"):
        node.rcv(node.port(), ping="not a function")
    with pytest.raises(TypeError, match="rcv callback must be callable"):
        node.rcv(node.port(), 42)  # type: ignore[arg-type]


async def test_kil_of_node_port(node: aemp.Node) -> None:
    with pytest.raises(aemp.InvalidID, match="kil needs a port ID"):
        node.kil(node.id)
    with pytest.raises(aemp.InvalidID, match="node port"):
        node.kil("othernode")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (object(), "object: messages hold only None, bool, int"),
        (2**64, "out of range"),
        (-(2**63) - 1, "out of range"),
        ({1: "x"}, "dict key 1 is a int"),
        ([1, {2, 3}], "set: messages hold only"),
        ({"k": [b"ok", complex(1, 2)]}, "complex"),
        ("caf\udce9", "lone surrogate at index 3"),
        ([{"k": "\ud800"}], "lone surrogate at index 0"),
        ({"\udfff": 1}, "lone surrogate"),
    ],
)
async def test_non_encodable_message_elements(node: aemp.Node, bad: object, match: str) -> None:
    p = node.port(print)
    with pytest.raises(aemp.MessageError, match=match) as ei:
        node.snd(p, "tag", bad)
    assert isinstance(ei.value, TypeError)
    with pytest.raises(aemp.MessageError):
        aemp.snd(p, "tag", bad)  # the inlined module-level fast path checks too


async def test_plain_data_is_accepted(node: aemp.Node) -> None:
    p = node.port(lambda *m: None)
    node.snd(p, None, True, 0, -(2**63), 2**64 - 1, 1.5, "s", b"b", [1, [2]], {"k": {"j": []}})
    node.snd(p, (1, 2))  # tuples travel as lists
    node.snd(p, "café ✓ 𝄞", [bytearray(b"x")], {"ключ": "значение"})


async def test_empty_message(node: aemp.Node) -> None:
    with pytest.raises(aemp.MessageError, match="at least one element"):
        node.snd(node.port(print))
    with pytest.raises(aemp.MessageError, match="at least one element"):
        aemp.snd(aemp.port(print))


async def test_deeply_nested_message(node: aemp.Node) -> None:
    deep: list[object] = []
    cur = deep
    for _ in range(600):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(aemp.MessageError, match="nested more than 500"):
        node.snd(node.port(print), "x", deep)


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"monitor_timeout": -1}, "'monitor_timeout' must be a positive number"),
        ({"monitor_timeout": "5"}, "'monitor_timeout' must be a positive number"),
        ({"secret": 5}, "'secret' must be a str or None"),
        ({"framing_format": ["cbor"]}, "'framing_format' holds 'cbor'"),
        ({"auth_accept": []}, "'auth_accept' must not be empty"),
        ({"nodelay": "yes"}, "'nodelay' must be true or false"),
        ({"max_packet": 10}, "'max_packet' must be an int of at least 1024"),
        ({"services": [5]}, "'services' entry 5"),
        ({"nodeid": "a#b"}, "not valid"),
        ({"nodeid": "%x"}, "unknown %-escape"),
        ({"colour": "red"}, "unknown configuration key 'colour'"),
    ],
)
async def test_config_errors(keys: dict[str, object], match: str) -> None:
    with pytest.raises((aemp.ConfigError, aemp.InvalidID), match=match):
        aemp.Node(**keys)


async def test_nodeid_templates() -> None:
    import socket

    a = aemp.Node(nodeid="w/%n/%u")
    host, rand = a.id.split("/")[1:]
    assert host == socket.gethostname() and len(rand) == 10
    b = aemp.Node(nodeid="pool/")
    assert b.id.startswith("pool/") and len(b.id) == 15
    await a.close()
    await b.close()


def test_exception_tree() -> None:
    builtin = {
        aemp.ConfigError: ValueError,
        aemp.InvalidID: ValueError,
        aemp.NotLocalPort: ValueError,
        aemp.MessageError: TypeError,
        aemp.SpawnError: ValueError,
        aemp.LocalProtocolError: RuntimeError,
        aemp.RemoteProtocolError: ValueError,
        aemp.AuthError: ValueError,
        aemp.InvalidArgument: TypeError,
        aemp.OutOfRange: ValueError,
        aemp.AlreadyHandled: ValueError,
        aemp.NodeClosed: RuntimeError,
        aemp.NoCurrentNode: RuntimeError,
        aemp.PortDead: RuntimeError,
        aemp.CallTimeout: TimeoutError,
    }
    for cls, base in builtin.items():
        assert issubclass(cls, aemp.AempError) and issubclass(cls, base), cls


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_local_and_wire_agree_on_nesting(framing: str) -> None:
    """A message too deep for the wire is too deep locally too (local is not special)."""
    from aemp._message import check_message
    from aemp.wire._framing import MAX_DEPTH, make_encoder

    enc = make_encoder(framing)

    def nest(k: int) -> Any:
        v: Any = 1
        for _ in range(k):
            v = [v]
        return v

    for k in range(MAX_DEPTH - 2, MAX_DEPTH + 2):
        try:
            check_message(("t", nest(k)))
            local = True
        except aemp.MessageError:
            local = False
        try:
            enc.encode(["p", "t", nest(k)])
            wire = True
        except aemp.MessageError:
            wire = False
        assert local == wire, f"depth {k}: local {local}, wire {wire}"
        assert local == (k < MAX_DEPTH)
