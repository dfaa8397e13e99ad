"""A capability built the way an extension builds one, as a check of aemp.lowlevel.

`Counter` below is a small service of the kind docs/lowlevel.md is for:
node requests that add to a count and answer it, a global-node request
that sums what the nodes report, a watcher of other nodes' links, and
statistics. It uses aemp's public API, aemp.lowlevel and aemp.testing
only, nothing private: if it needs more, lowlevel lacks something. The
tests then check what an author meets: typed functions, clear errors for
bad tags, a tag registered twice and handlers that raise.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, get_type_hints

import pytest

import aemp
from aemp import lowlevel, testing

pytestmark = pytest.mark.virtual_time


class Counter:
    """Counts per node, on every node that runs it.

    Node requests: ``x_count_add n`` adds n to the sender's count;
    ``x_count_get reply...`` answers the sender's count to a reply port
    (so ``cal(nodeid, "x_count_get")`` works). Global-node request:
    ``g_x_count_report n`` records n as the sender's report, and
    ``g_x_count_total reply...`` answers the sum of the reports.
    """

    def __init__(self, node: aemp.Node) -> None:
        self.node = node
        self.counts: dict[str | None, int] = {}
        self.reports: dict[str, int] = {}
        self.links: list[tuple[str, bool]] = []
        lowlevel.handle(node, "x_count_add", self.add)
        lowlevel.handle(node, "x_count_get", self.get)
        lowlevel.handle_global(node, "g_x_count_report", self.report)
        lowlevel.handle_global(node, "g_x_count_total", self.total)
        self.watch = lowlevel.watch_links(node, self.link)
        lowlevel.on_close(node, self.watch.cancel)

    def add(self, sender: str | None, n: Any) -> None:
        if type(n) is not int:
            raise TypeError(f"x_count_add wants an int, got {n!r:.40}")
        self.counts[sender] = self.counts.get(sender, 0) + n

    def get(self, sender: str | None, reply: Any, *tag: Any) -> None:
        self.node.snd(reply, *tag, self.counts.get(sender, 0))

    def report(self, sender: str, n: Any) -> None:
        if type(n) is not int:
            raise TypeError(f"g_x_count_report wants an int, got {n!r:.40}")
        self.reports[sender] = n

    def total(self, sender: str, reply: Any, *tag: Any) -> None:
        self.node.snd(reply, *tag, sum(self.reports.values()))

    def link(self, nodeid: str, up: bool) -> None:
        self.links.append((nodeid, up))

    def statistics(self) -> dict[str, Any]:
        return {"nodes": len(self.counts), "reports": len(self.reports)}


async def test_node_requests_count_per_sender_and_answer_a_cal() -> None:
    async with testing.pair() as (a, b, _link):
        counter = Counter(b)
        lowlevel.request(a, "b", "x_count_add", 2)
        lowlevel.request(a, "b", "x_count_add", 3)
        lowlevel.request(b, "b", "x_count_add", 10)  # b's own code: sender None
        assert await a.cal("b", "x_count_get", timeout=5) == (5,)
        assert await b.cal("b", "x_count_get", timeout=5) == (10,)
        assert counter.counts == {"a": 5, None: 10}
        # `can` answers from the registry
        assert await a.cal("b", "can", "x_count_add", timeout=5) == (True,)
        assert await a.cal("a", "can", "x_count_add", timeout=5) == (False,)
        stats = lowlevel.statistics(a)
        assert stats["calls"] == 0 and stats["remotes"] == {"b": "up"}


async def test_global_requests_from_other_nodes_only(caplog: pytest.LogCaptureFixture) -> None:
    # with no seeds, each node of a pair is its own global node
    async with testing.pair() as (a, b, _link):
        assert lowlevel.database(b)["global"]
        counter = Counter(b)
        lowlevel.request(a, "b", "g_x_count_report", 7)
        assert await a.cal("b", "g_x_count_total", timeout=5) == (7,)
        assert counter.reports == {"a": 7}
        # b's own code has no sender to report as: refused and logged
        with caplog.at_level(logging.WARNING, "aemp"):
            lowlevel.request(b, "b", "g_x_count_report", 1)
            await testing.wait_until(lambda: "g_x_count_report" in caplog.text)
        assert "from this node ignored" in caplog.text
        assert counter.reports == {"a": 7}


async def test_the_watcher_sees_links_come_and_go() -> None:
    async with testing.pair() as (a, _b, link):
        counter = Counter(a)
        link.cut("cut by the test")
        assert counter.links == [("b", False)]
        link.reconnect()
        await testing.wait_until(lambda: counter.links[-1:] == [("b", True)])
        counter.watch.cancel()
        link.cut("again")
        assert counter.links == [("b", False), ("b", True)]


async def test_registration_errors_are_clear() -> None:
    async with testing.pair() as (a, _b, _link):
        Counter(a)
        for bad in (1, None, "", b"x_tag"):
            with pytest.raises(aemp.InvalidArgument, match=r"tag must be a non-empty str"):
                lowlevel.handle(a, bad, print)  # type: ignore[arg-type]
            with pytest.raises(aemp.InvalidArgument, match=r"tag must be a non-empty str"):
                lowlevel.handle_global(a, bad, print)  # type: ignore[arg-type]
        with pytest.raises(aemp.InvalidArgument, match="must be callable"):
            lowlevel.handle(a, "x_new", "not a function")  # type: ignore[arg-type]
        with pytest.raises(aemp.InvalidArgument, match="must be callable"):
            lowlevel.handle_global(a, "g_x_new", None)  # type: ignore[arg-type]
        # a tag taken: by the extension itself, by the kernel, by the database
        for tag in ("x_count_add", "mon1", "g_x_count_total", "g_find"):
            register = lowlevel.handle_global if tag.startswith("g_") else lowlevel.handle
            with pytest.raises(aemp.AlreadyHandled, match=f"{tag!r} is handled already") as e:
                register(a, tag, print)
            assert isinstance(e.value, ValueError)
        with pytest.raises(aemp.AlreadyHandled):
            lowlevel.handle(a, "g_x_count_total", print)  # a global tag is a node request too
        with pytest.raises(aemp.InvalidArgument, match="tag must be a str"):
            lowlevel.request(a, "b", 3)  # type: ignore[arg-type]
        with pytest.raises(aemp.InvalidID, match="node ID"):
            lowlevel.request(a, "b#port", "x_count_add", 1)
        with pytest.raises(aemp.MessageError, match="cannot send"):
            lowlevel.request(a, "b", "x_count_add", {1, 2})


@pytest.mark.allow_error_log
async def test_a_handler_that_raises_harms_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with testing.pair() as (a, b, link):
        counter = Counter(b)

        def broken(sender: str | None, *args: Any) -> None:
            raise KeyError("a bug in the extension")

        lowlevel.handle(b, "x_broken", broken)
        with caplog.at_level(logging.WARNING, "aemp"):
            lowlevel.request(a, "b", "x_count_add", "three")  # the handler's TypeError
            lowlevel.request(a, "b", "x_broken", 1)  # any other exception
            lowlevel.request(b, "b", "x_broken", 2)  # the same, from b's own code
            lowlevel.request(a, "b", "x_count_add", 4)
            assert await a.cal("b", "x_count_get", timeout=5) == (4,)
            await testing.wait_until(lambda: caplog.text.count("x_broken") >= 2)
        records = {r.getMessage(): r for r in caplog.records if r.name.startswith("aemp")}
        assert {(r.levelname, m) for m, r in records.items()} == {
            (
                "WARNING",
                "node b: malformed 'x_count_add' request from a ignored: "
                "x_count_add wants an int, got 'three'",
            ),
            ("ERROR", "node b: the handler of the node request 'x_broken' from a failed"),
            ("ERROR", "node b: the handler of the node request 'x_broken' from this node failed"),
        }
        for r in records.values():
            assert r.levelname == "WARNING" or (r.exc_info and r.exc_info[0] is KeyError)
        assert counter.counts == {"a": 4}
        assert link.end(a).packets_in > 0  # the link is still up
        assert lowlevel.statistics(b)["remotes"] == {"a": "up"}


def test_every_lowlevel_function_is_typed() -> None:
    names = {"Node": aemp.Node, "asyncio": asyncio}  # imported for type checking only
    for name in lowlevel.__all__:
        fn = getattr(lowlevel, name)
        hints = get_type_hints(fn, localns=names)
        params = list(inspect.signature(fn).parameters)
        missing = [p for p in [*params, "return"] if p not in hints]
        assert not missing, f"lowlevel.{name} has no annotation for {missing}"
    # what the functions return is public: an author can name it
    assert get_type_hints(lowlevel.watch_links, localns=names)["return"] is aemp.Handle
    assert get_type_hints(lowlevel.timer, localns=names)["return"] is aemp.Timer
    send, drop = get_type_hints(lowlevel.reply_ports, localns=names)["return"].__args__
    assert send.__args__[-1] is lowlevel.ReplyPort and drop.__args__[0] is lowlevel.ReplyPort
