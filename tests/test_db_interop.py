"""A Perl slave's database traffic, replayed from a capture against an aemp global node.

protocol-vectors/json/seedproxy.conn1 is a Perl node (nodeA) attached to a
Perl seed. Its packets are sent here, after a fresh json handshake, to an
aemp node called "seed"; the answers must be the ones the Perl seed gave
(but for what nodeB did in that capture, which this test has no nodeB for).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aemp
from aemp import wire

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocol-vectors"
SECRET = "demo-secret"


def packets(capture: str, direction: str) -> list[Any]:
    """The packets of one direction ("client->server" or "server->client") of a capture."""
    out: list[Any] = []
    section = None
    for line in (VECTORS / f"{capture}.decoded.txt").read_text().splitlines():
        if line.startswith("== "):
            section = line[3:].split(" packets")[0]
        elif section == direction and line.startswith("  @"):
            out.append(json.loads(line.split(" ", 4)[4]))
    return out


async def test_perl_slave_against_aemp_global() -> None:
    sent = packets("json/seedproxy.conn1", "client->server")
    perl_answers = packets("json/seedproxy.conn1", "server->client")
    assert [p[1] for p in sent][:5] == ["g_slave", "g_slave", "g_slave", "g_find", "g_mon1"]

    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET) as seed:
        host, port = seed.listeners[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        conn = wire.Connection(
            wire.Settings(nodeid="nodeA", provider="AE-2.01", secret=SECRET,
                          framing_format=["json"]),
            peeraddr=seed.listeners[0],
        )  # fmt: skip
        conn.start()
        writer.write(conn.data_to_send())
        got: list[Any] = []
        async with asyncio.timeout(5):
            while True:
                ev = conn.next_event()
                writer.write(conn.data_to_send())
                if isinstance(ev, wire.Packets):
                    got.extend(ev.packets)
                elif isinstance(ev, wire.Authenticated):
                    conn.send_packets(sent)
                    writer.write(conn.data_to_send())
                elif ev is wire.NEED_DATA:
                    if any(p[1] == "g_chg2" for p in got):
                        break
                    data = await reader.read(65536)
                    assert data, f"closed; got {got}"
                    conn.receive_data(data)
        writer.close()

    # the Perl seed's answers, less the two that came from nodeB's doings
    want = [p for p in perl_answers if "keyB" not in json.dumps(p)]
    want = [["", "g_found", "seed", seed.listeners] if p[1] == "g_found" else p for p in want]
    assert got == want, f"aemp answered {got}, the Perl seed {want}"
