"""Data streams between nodes in one process (aemp.streams): bytes both
ways, flow control, closing versus breaking, refusals, authentication, TLS."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import stream_targets
from conftest import Recorder, until

import aemp
from aemp import lowlevel
from aemp.streams import BrokenStreamError, ClosedStreamError, Stream, open_stream

SECRET = "stream-secret"


@pytest.fixture
async def pair(stack: AsyncExitStack) -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    a = await stack.enter_async_context(
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2)
    )
    b = await stack.enter_async_context(
        aemp.Node(nodeid="b", binds=["127.0.0.1:0"], seeds=a.listeners, secret=SECRET,
                  monitor_timeout=2)
    )  # fmt: skip
    await until(lambda: a.node_is_up("b"), what="b up")
    yield a, b


async def test_echo_both_ways(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    stream = await open_stream(a, "b", "stream_targets:echo", timeout=5)
    assert isinstance(stream, Stream) and stream.peer == "b"
    async with stream:
        for size in (1, 1000, 300_000):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            await stream.send_all(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some()
            assert got == payload
    with pytest.raises(ClosedStreamError):
        await stream.send_all(b"late")
    with pytest.raises(ClosedStreamError):
        await stream.receive_some()
    await stream.aclose()  # idempotent


async def test_a_clean_close_is_the_end_not_an_error(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    rec = Recorder()
    reply = a.port(rec)
    stream = await open_stream(a, "b", "stream_targets:digest", reply, timeout=5)
    data = bytes(range(256)) * 40_000  # 10 MB
    async with stream:
        await stream.send_all(data)
    (calls,) = await rec.wait(1, limit=20)
    assert calls == ("done", len(data), hashlib.sha256(data).hexdigest())


async def test_the_peer_sends_and_closes(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    stream = await open_stream(a, "b", "stream_targets:source", 5_000_000, 65536, timeout=5)
    n = 0
    while data := await stream.receive_some(100_000):
        assert len(data) <= 100_000
        n += len(data)
    assert n == 5_000_000
    await stream.aclose()


async def test_to_a_port_opens_to_its_node_and_a_local_stream(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    port = b.port(lambda *m: None)
    stream = await open_stream(a, port, "stream_targets:echo", timeout=5)
    assert stream.peer == "b"
    await stream.aclose()
    # within one node: a socket pair, the same rules (own code: no policy)
    local = await open_stream(a, "a", "stream_targets:echo", timeout=5)
    async with local:
        await local.send_all(b"self")
        assert await local.receive_some() == b"self"


async def test_a_receiver_that_does_not_read_holds_the_sender(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    """Flow control: with nobody reading, send_all waits once the buffers
    on both sides are full; memory stays bounded by stream_buffer."""
    a, _b = pair
    rec = Recorder()
    stream = await open_stream(a, "b", "stream_targets:hold", a.port(rec), timeout=5)
    await rec.wait(1)
    sent = 0
    block = b"z" * 65536
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            while True:
                await stream.send_all(block)
                sent += len(block)
    limit = a.config.stream_buffer
    # what left: the receiver's buffer, the two kernels' socket buffers, our
    # transport's bound; far less than what an unbounded sender would queue
    assert limit <= sent < 2 * limit + 16 * 1024 * 1024
    held = stream_targets.HELD.pop()
    assert held.bytes_received <= limit + 256 * 1024
    await held.aclose()
    await stream.aclose()


async def test_a_peer_node_closing_breaks_the_stream(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    rec = Recorder()
    stream = await open_stream(a, "b", "stream_targets:hold", a.port(rec), timeout=5)
    await rec.wait(1)
    stream_targets.HELD.pop()
    await b.close()
    with pytest.raises(BrokenStreamError):
        async with asyncio.timeout(5):
            while True:
                await stream.receive_some()
    with pytest.raises(BrokenStreamError):
        await stream.send_all(b"x" * 1_000_000)
    await stream.aclose()


async def test_the_init_port_dying_breaks_the_stream(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    stream = await open_stream(a, "b", "stream_targets:fail", timeout=5)
    with pytest.raises(BrokenStreamError):
        async with asyncio.timeout(5):
            while True:
                await stream.receive_some()


async def test_refused_targets(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    with pytest.raises(aemp.SpawnRefused, match="not marked spawnable"):
        await open_stream(a, "b", "stream_targets:not_spawnable", timeout=5)
    with pytest.raises(aemp.SpawnRefused, match="not marked spawnable"):
        await open_stream(a, "b", "stream_targets:no_such_function", timeout=5)
    with pytest.raises(aemp.SpawnRefused, match="not loaded"):
        await open_stream(a, "b", "no_such_module:func", timeout=5)
    with pytest.raises(aemp.SpawnError):
        await open_stream(a, "b", "not a target", timeout=5)
    # nothing was left behind, and a good stream still opens
    stream = await open_stream(a, "b", "stream_targets:echo", timeout=5)
    await stream.aclose()
    assert not a.network.streams or all(s.dataconn_id for s in a.network.streams)  # type: ignore[union-attr]


async def test_a_secure_node_refuses_every_stream(stack: AsyncExitStack) -> None:
    a = await stack.enter_async_context(aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET))
    await stack.enter_async_context(
        aemp.Node(nodeid="s", seeds=a.listeners, secret=SECRET, secure=True)
    )
    await until(lambda: a.node_is_up("s"), what="s up")
    with pytest.raises(aemp.SpawnRefused, match="secure"):
        await open_stream(a, "s", "stream_targets:echo", timeout=5)


async def test_the_peer_dials_when_the_opener_has_no_listeners(stack: AsyncExitStack) -> None:
    a = await stack.enter_async_context(aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET))
    c = await stack.enter_async_context(aemp.Node(nodeid="c", seeds=a.listeners, secret=SECRET))
    await until(lambda: a.node_is_up("c"), what="c up")
    # a listens, c does not: c opens, a is dialled by... c (a has listeners)
    stream = await open_stream(c, "a", "stream_targets:echo", timeout=5)
    async with stream:
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
    # and the other way: a opens to c, which has no listeners, so c dials a
    stream = await open_stream(a, "c", "stream_targets:echo", timeout=5)
    async with stream:
        await stream.send_all(b"pong")
        assert await stream.receive_some() == b"pong"


async def test_bad_arguments(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, _b = pair
    with pytest.raises(aemp.InvalidID):
        await open_stream(a, "no spaces", "stream_targets:echo")
    with pytest.raises(aemp.SpawnError):
        await open_stream(a, "b", "nocolon")
    with pytest.raises(aemp.OutOfRange):
        await open_stream(a, "b", "stream_targets:echo", timeout=0)
    with pytest.raises(aemp.MessageError):
        await open_stream(a, "b", "stream_targets:echo", object())
    stream = await open_stream(a, "b", "stream_targets:echo", timeout=5)
    with pytest.raises(aemp.InvalidArgument, match="bytes"):
        await stream.send_all("text")  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match="max_bytes"):
        await stream.receive_some(0)
    await stream.aclose()


async def test_a_node_with_another_secret_cannot_open_a_data_connection(
    pair: tuple[aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    """A data connection authenticates as a link does: a node that does not
    know the secret gets no stream, even under an id that is expected."""
    a, _b = pair
    future = lowlevel.expect_data_connection(a, "mallory", "x1@mallory")
    async with aemp.Node(nodeid="mallory", secret="wrong") as mallory:
        mine = lowlevel.expect_data_connection(mallory, "a", "x1@mallory")
        lowlevel.dial_data_connection(mallory, "a", "x1@mallory", a.listeners)
        with pytest.raises(ConnectionError, match="shared secret mismatch"):
            async with asyncio.timeout(5):
                await mine
    assert not future.done()  # nothing reached a's side
    future.cancel()
    assert any(
        r.name == "aemp.transport" and "node a:" in r.getMessage() and "mismatch" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    # a's link to b is unharmed
    assert await a.cal("b", "up_nodes", timeout=5) == (["a"],)


async def test_an_unexpected_id_or_node_is_refused(
    pair: tuple[aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    _a, b = pair
    # b expects "id1" from node "a" only; node "b2" with the secret tries it
    future = lowlevel.expect_data_connection(b, "a", "id1@a")
    async with aemp.Node(nodeid="b2", secret=SECRET) as other:
        mine = lowlevel.expect_data_connection(other, "b", "id1@a")
        lowlevel.dial_data_connection(other, "b", "id1@a", b.listeners)
        with pytest.raises(ConnectionError, match="peer closed during handshake"):
            async with asyncio.timeout(5):
                await mine
    assert not future.done()
    future.cancel()
    assert any(
        "no data connection 'id1@a' is expected from 'b2'" in r.getMessage() for r in caplog.records
    )


async def test_over_tls(stack: AsyncExitStack, tmp_path: object) -> None:
    from aemp.tls import make_certificate

    pem = make_certificate("streams", days=1)
    a = await stack.enter_async_context(aemp.Node(nodeid="a", binds=["127.0.0.1:0"], cert=pem))
    await stack.enter_async_context(
        aemp.Node(nodeid="b", binds=["127.0.0.1:0"], seeds=a.listeners, cert=pem)
    )
    await until(lambda: a.node_is_up("b"), what="b up")
    assert lowlevel.statistics(a)["links"]["b"]["tls"]
    rec = Recorder()
    stream = await open_stream(a, "b", "stream_targets:digest", a.port(rec), timeout=5)
    data = bytes(range(256)) * 20_000
    async with stream:
        await stream.send_all(data)
    (calls,) = await rec.wait(1, limit=20)
    assert calls == ("done", len(data), hashlib.sha256(data).hexdigest())


async def test_a_dialler_speaking_only_the_page_gets_a_data_connection(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    """A client written from docs/protocol.md alone (hashlib and hmac, no
    aemp.wire), greeting as AnyEvent::MP's DataConn does, reaches an aemp
    listener: its bytes come out of the expected DataStream and back."""
    import base64
    import hmac
    import os

    a, _b = pair
    future = lowlevel.expect_data_connection(a, "perlnode", "b@perlnode")
    host, _, port = a.listeners[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    line1 = (
        b"aemp-dataconn;1;perlnode;hmac_sha3_512,cleartext;json;provider=AE-2.01;"
        b"peeraddr=" + a.listeners[0].encode() + b";dataconn_id=b@perlnode;mproto=1;gproto=1"
    )
    line2 = base64.b64encode(os.urandom(66))
    writer.write(line1 + b"\n" + line2 + b"\n")
    r1 = (await reader.readline()).rstrip(b"\n")
    r2 = (await reader.readline()).rstrip(b"\n")
    assert r1.startswith(b"aemp;1;a;")  # the listener greets as for a link
    token = hmac.new(
        SECRET.encode(), b"\n".join([line1, line2, r1, r2]) + b"\n", hashlib.sha3_512
    ).hexdigest()
    writer.write(f"hmac_sha3_512;{token};json\n".encode() + b"first bytes")
    auth = (await reader.readline()).rstrip(b"\n")
    expected = hmac.new(
        SECRET.encode(), b"\n".join([r1, r2, line1, line2]) + b"\n", hashlib.sha3_512
    ).hexdigest()
    assert auth.split(b";")[:2] == [b"hmac_sha3_512", expected.encode()]
    stream = await asyncio.wait_for(future, 5)
    assert stream.peer == "perlnode"
    assert await stream.read() == b"first bytes"
    await stream.write(b"raw reply")
    assert await reader.readexactly(9) == b"raw reply"
    writer.close()
    assert await stream.read() == b""  # the raw stream ends; no framing anywhere
    stream.close()


async def test_neither_node_listens(stack: AsyncExitStack) -> None:
    """Two nodes attached to one seed, with no listeners of their own, cannot
    reach each other: the opener hears why at once, not after its timeout."""
    seed = await stack.enter_async_context(
        aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET)
    )
    a = await stack.enter_async_context(aemp.Node(nodeid="a", seeds=seed.listeners, secret=SECRET))
    c = await stack.enter_async_context(aemp.Node(nodeid="c", seeds=seed.listeners, secret=SECRET))
    await until(lambda: seed.node_is_up("a") and seed.node_is_up("c"), what="attached")
    start = asyncio.get_running_loop().time()
    with pytest.raises(BrokenStreamError, match="no known address"):
        await open_stream(a, "c", "stream_targets:echo", timeout=60)
    assert asyncio.get_running_loop().time() - start < 30  # not the timeout
    assert not c.node_is_up("a")
