"""Limits checked before work: an over-limit message is refused before it is
packed, error texts stay short, the decoders bound decoded values as well as
bytes, and a message queued while connecting meets the same limits."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest

import aemp
from aemp import MessageError, RemoteProtocolError, wire

SECRET = "limits-secret"
ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, timeout: float = 60.0) -> dict[str, float]:
    """Run code in a fresh interpreter; it prints one JSON object last."""
    prelude = textwrap.dedent(
        """
        import json, resource, time
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # never a runaway

        def hwm():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM"):
                        return int(line.split()[1]) / 1024
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- sending: the size is bounded before the packet is packed ----------------------


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize("shape", ["list", "flat", "str"])
def test_a_gib_message_is_refused_before_it_is_packed(framing: str, shape: str) -> None:
    # a GiB of packet from 8 MB of references to one str (or a 200 MB str):
    # refused naming max_packet, with no more than a few MB of new memory
    # (packing it first took 2 GB and seconds)
    result = _run(
        f"""
        from aemp import wire, MessageError
        s = "y" * 1000
        shape = {shape!r}
        if shape == "list":
            msg = ("data", [s] * (1 << 20))
        elif shape == "flat":
            msg = ("data", *([s] * (1 << 20)))
        else:
            msg = ("data", "z" * (200 << 20))
        enc = wire.make_encoder({framing!r})
        h0 = hwm(); t0 = time.perf_counter()
        try:
            enc.encode_message("port", msg)
        except MessageError as e:
            error = str(e)
        print(json.dumps({{"grew": hwm() - h0, "s": time.perf_counter() - t0, "error": error}}))
        """
    )
    assert "exceeds max_packet (67108864 bytes)" in result["error"]  # type: ignore[operator]
    assert result["grew"] < 20, result
    assert result["s"] < 1.0, result


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_the_exact_size_decides_near_the_limit(framing: str) -> None:
    enc = wire.make_encoder(framing, 2048)
    assert len(enc.encode_message("p", ("x" * 2000,))) <= 2048
    # under the bound of lengths, over once packed: the exact check refuses it
    with pytest.raises(MessageError, match=r"packet of 2\d\d\d bytes exceeds max_packet \(2048"):
        enc.encode_message("p", ("x" * 2000, *range(100, 140)))
    with pytest.raises(MessageError, match=r"at least \d+ bytes exceeds max_packet \(2048"):
        enc.encode(["p", {"k": ["x" * 3000]}])


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_values_over_max_objects_are_refused_at_send(framing: str) -> None:
    enc = wire.make_encoder(framing, 1 << 20, 1024)
    enc.encode(["p", list(range(1000))])
    with pytest.raises(MessageError, match=r"exceeds max_objects \(1024"):
        enc.encode(["p", [[]] * 2000])
    with pytest.raises(MessageError, match=r"exceeds max_objects \(1024"):
        enc.encode_message("p", tuple(range(1100)))
    loop: list[object] = []
    loop.append(loop)  # one that contains itself: refused, not walked forever
    with pytest.raises(MessageError, match=r"max_objects|nested"):
        enc.encode(["p", loop])


def test_error_texts_never_format_a_whole_value() -> None:
    enc = wire.make_encoder("msgpack")
    big = 10**20000  # its repr alone is refused by Python (over 4300 digits)
    for bad in [big, {big: 1}, {1, 2}, [big]]:
        t0 = time.perf_counter()
        with pytest.raises(MessageError) as info:
            enc.encode(["p", bad, "x" * 10_000_000])
        assert len(str(info.value)) < 600 and time.perf_counter() - t0 < 0.5
    with pytest.raises(MessageError, match="bits") as info:
        from aemp._message import check_message

        check_message((big,))
    assert len(str(info.value)) < 300
    with pytest.raises(aemp.ConfigError) as cinfo:
        wire.Settings(nodeid="n" + ";" + "x" * 1_000_000, provider="p", secret="s")
    assert len(str(cinfo.value)) < 300


# -- receiving: decoded values are bounded, not only bytes -------------------------


def _empty_arrays(framing: str, count: int) -> bytes:
    if framing == "msgpack":
        return b"\xdd" + (count + 1).to_bytes(4, "big") + b"\xa0" + b"\x90" * count
    return b'[""' + b",[]" * count + b"]"


def _feed_split(decoder: wire.Decoder, data: bytes, rng: random.Random) -> list[list[object]]:
    packets: list[list[object]] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 5000)
        packets += decoder.feed(data[pos : pos + step])
        pos += step
    return packets


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_the_decoder_bounds_values_per_packet(framing: str) -> None:
    rng = random.Random(13)
    ok = _empty_arrays(framing, 1900)  # 1,901 values
    assert _feed_split(wire.make_decoder(framing, 1 << 20, 2000), ok * 3, rng)[2][1] == []
    for data in [
        _empty_arrays(framing, 5000),
        (b'["", {' + b",".join(b'"k%d":1' % i for i in range(3000)) + b"}]")
        if framing == "json"
        else msgpack.packb(["", {f"k{i}": 1 for i in range(3000)}]),
    ]:
        decoder = wire.make_decoder(framing, 1 << 20, 2000)
        with pytest.raises(RemoteProtocolError, match=r"max_objects \(2000\)"):
            _feed_split(decoder, ok + data, rng)
    # commas inside strings are not values
    text = json.dumps(["", "," * 10_000, ":[{" * 1000]).encode()
    assert len(wire.make_decoder("json", 1 << 20, 2000).feed(text)[0]) == 3


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_big_packets_within_the_limit_decode_among_small_ones(framing: str) -> None:
    # a packet longer than max_objects bytes is decoded again, counting its
    # values; the small ones around it, split anywhere, decode as before
    enc = wire.make_encoder(framing)
    small = [["p", i, "x" * (i % 7)] for i in range(50)]
    big = [["p", "y" * 30_000, list(range(1500))], ["p", {f"k{i}": [i] for i in range(600)}]]
    packets = small[:20] + big[:1] + small[20:30] + big[1:] + small[30:]
    data = b"".join(enc.encode(p) for p in packets)
    for seed in range(20):
        decoder = wire.make_decoder(framing, 1 << 20, 2000)
        assert _feed_split(decoder, data, random.Random(seed)) == packets
        assert not decoder.has_partial()


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_a_packet_of_empty_arrays_costs_bounded_memory(framing: str) -> None:
    # 24 MB of empty arrays became 1.7 GB of lists (msgpack); now the
    # decoder stops at max_objects (4 Mi values, about 64 bytes each)
    result = _run(
        f"""
        from aemp import wire, RemoteProtocolError
        # lists of 1000 empty lists: no header alone is over the limit
        if {framing!r} == "msgpack":
            inner = b"\\xdc" + (1000).to_bytes(2, "big") + b"\\x90" * 1000
            data = b"\\xdd" + (24_001).to_bytes(4, "big") + b"\\xa0" + inner * 24_000
        else:
            inner = b",[" + b",".join([b"[]"] * 1000) + b"]"
            data = b'[""' + inner * 8_000 + b"]"
        dec = wire.make_decoder({framing!r})
        h0 = hwm(); t0 = time.perf_counter(); error = ""
        try:
            for i in range(0, len(data), 65536):
                dec.feed(data[i : i + 65536])
        except RemoteProtocolError as e:
            error = str(e)
        print(json.dumps({{"grew": hwm() - h0, "s": time.perf_counter() - t0, "error": error}}))
        """,
        timeout=120,
    )
    assert "max_objects (4194304)" in result["error"]  # type: ignore[operator]
    assert result["grew"] < 400, result


@pytest.fixture
async def server() -> object:
    async with (
        aemp.Node(
            nodeid="srv", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2.0,
            max_objects=4096,
        ) as srv,
        aemp.Node(nodeid="good", seeds=srv.listeners, secret=SECRET) as good,
    ):  # fmt: skip
        async with asyncio.timeout(5):
            while not good.node_is_up("srv"):
                await asyncio.sleep(0.005)
        yield srv, good


@pytest.mark.parametrize("framing", ["msgpack", "json"])
async def test_a_raw_peer_over_max_objects_is_closed(
    server: tuple[aemp.Node, aemp.Node], framing: str
) -> None:
    srv, good = server
    lost: list[tuple[object, ...]] = []
    srv.mon_nodes(lambda nodeid, up, *reason: lost.append((nodeid, up, *reason)))
    host, port = srv.listeners[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        conn = wire.Connection(
            wire.Settings(nodeid="raw", provider="t", secret=SECRET, framing_format=[framing]),
            peeraddr=srv.listeners[0],
        )
        conn.start()
        async with asyncio.timeout(5):
            while not isinstance(event := conn.next_event(), wire.Authenticated):
                writer.write(conn.data_to_send())
                if event is wire.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
            writer.write(conn.data_to_send() + _empty_arrays(framing, 10_000))
            while await reader.read(65536):  # until the node closes it
                pass
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    async with asyncio.timeout(5):
        while not any(not up for _, up, *_ in lost):
            await asyncio.sleep(0.005)
    assert any(n == "raw" and not up and "max_objects (4096)" in str(r) for n, up, *r in lost), lost
    echo = srv.port(echo=lambda reply: srv.snd(reply, "ok"))
    assert await good.cal(echo, "echo", timeout=5) == ("ok",)  # the node serves on


# -- queued while connecting: the same limits as an open link ----------------------


async def test_an_over_limit_message_while_connecting_is_refused_at_snd() -> None:
    async with aemp.Node(
        nodeid="b13", binds=["127.0.0.1:0"], secret=SECRET, max_packet=1 << 20
    ) as b:
        got: list[int] = []
        port = b.port(lambda data: got.append(len(data)))
        async with aemp.Node(
            nodeid="a13", seeds=b.listeners, secret=SECRET, max_packet=1 << 20
        ) as a:
            assert not a.node_is_up("b13")  # the first packet starts the connect
            with pytest.raises(MessageError, match=r"exceeds max_packet \(1048576"):
                a.snd(port, b"x" * (2 << 20))
            with pytest.raises(MessageError, match=r"exceeds max_packet \(1048576"):
                a.snd(port, ["y" * 1000] * 2000)
            a.snd(port, b"z" * (512 << 10))  # within the limit: queued, then delivered
            async with asyncio.timeout(5):
                while not got:
                    await asyncio.sleep(0.005)
            assert got == [512 << 10] and a.node_is_up("b13")
            # and once up, the same refusal
            with pytest.raises(MessageError, match=r"exceeds max_packet \(1048576"):
                a.snd(port, b"x" * (2 << 20))


def test_while_connecting_the_stricter_framing_decides() -> None:
    # 200 KB of control characters: 200 KB in msgpack, 1.2 MB in JSON
    packet = ["p", "\x01" * 200_000]
    wire.check_unsent(packet, ["msgpack"], 1 << 20)
    with pytest.raises(MessageError, match=r"packet of \d+ bytes exceeds max_packet"):
        wire.check_unsent(packet, ["msgpack", "json"], 1 << 20)
    # bytes cannot go as JSON at all: that is left to the link, not a size
    wire.check_unsent(["p", b"x" * 1000], ["msgpack", "json"], 1 << 20)
    with pytest.raises(MessageError, match="max_objects"):
        wire.check_unsent(["p", list(range(5000))], ["msgpack"], 1 << 20, 1024)
