"""A silent peer is found within this node's own monitor_timeout, whatever
heartbeat interval (hb) it announced; the greeting check refuses an hb that
makes no sense."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Recorder

import aemp
from aemp import testing, wire
from aemp._errors import RemoteProtocolError
from aemp.wire import _connection as wire_connection

SECRET = "test-secret"


@pytest.mark.parametrize(
    "hb", ["1e300", "1e999", "inf", "nan", "-1", "0", "0.001", "86401", "5s", " 5", "1_0", ""]
)
def test_greeting_check_refuses_a_nonsense_heartbeat(hb: str) -> None:
    conn = wire.Connection(wire.Settings("A", "test", secret=SECRET), peeraddr="p:1")
    conn.start()
    conn.receive_data(f"aemp;1;p;hmac_sha3_512;json;hb={hb}\nnonce\n".encode())
    with pytest.raises(
        RemoteProtocolError, match=re.escape(f"hb='{hb}' is not a heartbeat interval")
    ):
        conn.next_event()


@pytest.mark.parametrize("hb", ["0.05", "7.5", "30", "86400", "1e3"])
def test_greeting_check_takes_a_heartbeat_in_range(hb: str) -> None:
    conn = wire.Connection(wire.Settings("A", "test", secret=SECRET), peeraddr="p:1")
    conn.start()
    conn.receive_data(f"aemp;1;p;hmac_sha3_512;json;hb={hb}\nnonce\n".encode())
    event = conn.next_event()
    assert isinstance(event, wire.GreetingReceived) and event.greeting.heartbeat == float(hb)


@pytest.mark.parametrize("hb", [0.001, 1e6, float("inf")])
def test_settings_refuse_a_heartbeat_out_of_range(hb: float) -> None:
    with pytest.raises(
        aemp.ConfigError, match=re.escape("'heartbeat' must be seconds from 0.05 to 86400")
    ):
        wire.Settings("A", "test", secret=SECRET, heartbeat=hb)


async def test_the_extreme_monitor_timeouts_announce_a_heartbeat_the_greeting_accepts() -> None:
    for timeout, hb in ((86400, 21600), (0.1, wire.MIN_HEARTBEAT)):
        async with aemp.Node(
            nodeid="n", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=timeout
        ) as n:
            # the greeting the node sends, read as a peer's wire core reads it
            host, port = n.listeners[0].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                line1 = await asyncio.wait_for(reader.readline(), 5)
                line2 = await asyncio.wait_for(reader.readline(), 5)
            finally:
                writer.close()
            conn = wire.Connection(wire.Settings("A", "test", secret=SECRET), peeraddr="p:1")
            conn.start()
            conn.receive_data(line1 + line2)
            event = conn.next_event()
            assert isinstance(event, wire.GreetingReceived)
            assert event.greeting.heartbeat == hb
            assert wire.MIN_HEARTBEAT <= hb <= wire.MAX_HEARTBEAT


class HostilePeer:
    """A listener that speaks the handshake as node `hostile`, announcing
    `hb` whatever it is, and then says nothing more (it keeps reading)."""

    def __init__(self, hb: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hb = hb
        self.authenticated: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        make_line1 = wire_connection.make_line1

        def line1(nodeid: str, accept: Any, framings: Any, options: Any) -> bytes:
            if nodeid == "hostile":
                options = [(k, v) for k, v in options if k != "hb"] + [("hb", self.hb)]
            return make_line1(nodeid, accept, framings, options)

        monkeypatch.setattr(wire_connection, "make_line1", line1)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = wire.Connection(wire.Settings("hostile", "evil", secret=SECRET), peeraddr="x:1")
        conn.start()
        writer.write(conn.data_to_send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if not conn.handshake_done:
                    conn.receive_data(data)
                    while (ev := conn.next_event()) is not wire.NEED_DATA:
                        if isinstance(ev, wire.Authenticated) and not self.authenticated.done():
                            self.authenticated.set_result(time.monotonic())
                    writer.write(conn.data_to_send())  # our auth line; then silence
        except (RemoteProtocolError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


@pytest.fixture
async def node() -> AsyncIterator[aemp.Node]:
    async with aemp.Node(nodeid="n", secret=SECRET, monitor_timeout=1, connect_interval=0.5) as n:
        yield n


async def test_silent_peer_with_the_largest_heartbeat_times_out_on_our_clock(
    node: aemp.Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer announces a day between heartbeats, authenticates and goes
    silent: the monitor on its port fires after our monitor_timeout (1 s)."""
    peer = HostilePeer("86400", monkeypatch)
    async with peer as addr:
        testing.network(node).addresses["hostile"] = [addr]
        fired = Recorder()
        node.mon("hostile#p", fired)
        at = await asyncio.wait_for(peer.authenticated, 5)
        await fired.wait(1, limit=4)
        took = time.monotonic() - at
    assert fired.calls == [("transport_error", "hostile", "heartbeat timeout")]
    assert 0.9 < took < 1.5, took


async def test_peer_announcing_an_absurd_heartbeat_is_refused(
    node: aemp.Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """hb=1e300 would have switched the timeout off: the greeting is refused,
    and the monitor fires as for a node that cannot be reached."""
    peer = HostilePeer("1e300", monkeypatch)
    async with peer as addr:
        testing.network(node).addresses["hostile"] = [addr]
        fired = Recorder()
        t0 = time.monotonic()
        node.mon("hostile#p", fired)
        await fired.wait(1, limit=4)
    assert fired.calls == [("transport_error", "hostile", "connect timeout")]
    assert time.monotonic() - t0 < 1.5
    assert "hb='1e300' is not a heartbeat interval" in caplog.text
    assert not peer.authenticated.done()
