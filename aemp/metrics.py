"""aemp.metrics: a node's statistics as Prometheus text, over HTTP.

The ``metrics`` key ("host:port", off unless set) makes ``configure()``
(and ``aemp run``) serve ``GET /metrics`` there; a Node made directly
does it with ``await aemp.metrics.serve(node, "127.0.0.1:9464")``. The
text is Prometheus' exposition format 0.0.4 (``# HELP``/``# TYPE`` lines,
one sample per line), made from aemp.lowlevel.status() at each request.

The responder is HTTP/1.0 on asyncio streams, as small as a scraper
needs: one request per connection, a request head of at most
MAX_REQUEST bytes read within REQUEST_TIMEOUT, at most MAX_CONNECTIONS at
once (more are closed at once), GET or HEAD of ``/metrics`` (or ``/``),
404 for another path, 405 for another method, 400 for anything else. It
has no authentication: whoever reaches the address reads the counts, so
bind it to loopback unless a scraper elsewhere needs it. Each connection
is a task the node owns; closing the node closes the listener.

May import aemp, aemp.lowlevel and the leaves (a capability).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import Node, __version__, lowlevel
from ._addr import format_address, parse_bind

__all__ = ["MetricsServer", "address", "exposition", "serve", "start"]

log = logging.getLogger("aemp.metrics")

MAX_REQUEST = 8192  # bytes of a request head (line and headers)
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request head
MAX_CONNECTIONS = 16  # requests served at once
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Text:
    """Lines of the exposition format, each family once with its HELP and TYPE."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            shown = repr(float(value)) if isinstance(value, float) else str(int(value))
            self.lines.append(f"{name}{labels} {shown}")

    def one(self, name: str, kind: str, help_: str, value: float) -> None:
        self.family(name, kind, help_, [("", value)])


def exposition(node: Node) -> str:
    """The node's statistics in Prometheus' text format (version 0.0.4)."""
    st = lowlevel.status(node)
    s: dict[str, Any] = st["statistics"]
    db: dict[str, Any] = s["db"]
    t = _Text()
    t.one("aemp_info", "gauge", "Always 1; the labels name the node and aemp's version.", 1)
    t.lines[-1] = f'aemp_info{{nodeid="{_label(node.id)}",version="{_label(__version__)}"}} 1'
    t.one("aemp_uptime_seconds", "gauge", "Seconds since the node was made.", st["uptime"])
    t.one("aemp_ports", "gauge", "Live local ports.", s["ports"])
    t.one("aemp_queued_messages", "gauge", "Entries in the run queue.", s["queued"])
    t.one(
        "aemp_backlog_messages", "gauge", "Messages waiting in busy or gated ports.", s["backlog"]
    )
    t.one("aemp_inbound_packets", "gauge", "Packets read and not yet delivered.", s["inbound"])
    t.one(
        "aemp_reading_paused",
        "gauge",
        "1 while flow control pauses reading from links.",
        1 if s["reading_paused"] else 0,
    )
    t.one("aemp_tasks", "gauge", "Tasks the node owns.", s["tasks"])
    t.one("aemp_timers", "gauge", "Timers the node owns.", s["timers"])
    t.one("aemp_calls_pending", "gauge", "Calls (cal) waiting for their reply.", s["calls"])
    t.one("aemp_routes", "gauge", "Cached routes to remote ports.", s["routes"])
    t.family(
        "aemp_remotes",
        "gauge",
        "Other nodes the node keeps state for, by state.",
        [(f'{{state="{_label(k)}"}}', v) for k, v in sorted(s["remotes"].items())],
    )
    t.one("aemp_unreachable_nodes", "gauge", "Nodes remembered as unreachable.", s["unreachable"])
    links: dict[str, dict[str, Any]] = s["links"]
    t.one("aemp_links", "gauge", "Links up now.", len(links) + s["links_omitted"])
    for what in ("bytes", "packets"):
        samples = []
        for peer in sorted(links):
            for way in ("in", "out"):
                labels = f'{{peer="{_label(peer)}",direction="{way}"}}'
                samples.append((labels, links[peer][f"{what}_{way}"]))
        t.family(
            f"aemp_link_{what}_total",
            "counter",
            f"The {what} of each link's data phase, each way (since the link came up).",
            samples,
        )
    t.one("aemp_links_up_total", "counter", "Links that came up.", s["links_up"])
    t.one("aemp_links_lost_total", "counter", "Links that were lost.", s["links_lost"])
    t.one(
        "aemp_restarts_total",
        "counter",
        "Links that came up to a node linked before (it restarted or reconnected).",
        s["restarts"],
    )
    t.one("aemp_db_entries", "gauge", "Database entries this node set.", db["entries"])
    t.one("aemp_db_families", "gauge", "Database families this node watches.", db["families"])
    t.one("aemp_db_monitors", "gauge", "db_mon callbacks.", db["monitors"])
    t.one("aemp_db_queries", "gauge", "Database queries waiting for an answer.", db["queries"])
    t.one("aemp_db_global", "gauge", "1 if the node is a global node.", 1 if db["global"] else 0)
    t.one(
        "aemp_db_merged_entries",
        "gauge",
        "Entries of the merged database (global nodes).",
        db["merged"],
    )
    return "\n".join(t.lines) + "\n"


def _response(status: str, body: bytes, head_only: bool = False, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: "
        + (CONTENT_TYPE if status.startswith("200") else "text/plain; charset=utf-8")
        + f"\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else body)


class MetricsServer:
    """A node's metrics endpoint (made by serve())."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.address: str | None = None  # "host:port" once listening
        self.requests = 0
        self.bad_requests = 0
        self._server: asyncio.AbstractServer | None = None
        self._open = 0

    async def open(self, where: str) -> None:
        if self._server is not None:
            if where != self.address:
                log.warning(
                    "node %s: metrics already served on %s, not also on %s",
                    self.node.id,
                    self.address,
                    where,
                )
            return
        host, port = parse_bind(where, "'metrics'")
        self._server = server = await asyncio.start_server(
            self._accepted, host, port, limit=MAX_REQUEST, backlog=MAX_CONNECTIONS
        )
        sock = server.sockets[0].getsockname()
        self.address = format_address(sock[0], sock[1])
        lowlevel.on_close(self.node, self.close)
        log.info("node %s: metrics on http://%s/metrics", self.node.id, self.address)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.node.closed or self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        lowlevel.spawn_task(self.node, self._serve_one(reader, writer))

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                self.bad_requests += 1
                writer.write(_response("400 Bad Request", b"expected GET /metrics\n"))
                return
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._open -= 1
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
            self.bad_requests += 1
            return _response("400 Bad Request", b"expected GET /metrics HTTP/1.0\n")
        method, path = line[0], line[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self.bad_requests += 1
            return _response(
                "405 Method Not Allowed", b"only GET and HEAD\n", extra="Allow: GET, HEAD\r\n"
            )
        if path not in (b"/metrics", b"/"):
            self.bad_requests += 1
            return _response("404 Not Found", b"the metrics are at /metrics\n")
        self.requests += 1
        return _response("200 OK", exposition(self.node).encode(), head_only=method == b"HEAD")


def _holder(node: Node) -> MetricsServer:
    server: MetricsServer = lowlevel.extension(node, "aemp.metrics", lambda: MetricsServer(node))
    return server


async def serve(node: Node, where: str = "127.0.0.1:0") -> MetricsServer:
    """Serve the node's metrics on `where` ("host:port"; port 0: any free one).

    Returns the server; its ``address`` is where it really listens. Once per
    node: a second call returns the same server. ConfigError for an address
    that is not "host:port"; OSError when it cannot be bound.
    """
    server = _holder(node)
    await server.open(where)
    return server


def address(node: Node) -> str | None:
    """Where the node serves its metrics ("host:port"), None if it does not."""
    if node.closed:
        return None
    with contextlib.suppress(Exception):
        return _holder(node).address
    return None


async def start(where: str) -> None:
    """The service the ``metrics`` key starts: serve() for the node being configured."""
    from ._runtime import CURRENT

    node = CURRENT.get()
    if node is None:  # pragma: no cover - configure() sets it
        raise RuntimeError("aemp.metrics.start runs as a service of a node being configured")
    await serve(node, where)
