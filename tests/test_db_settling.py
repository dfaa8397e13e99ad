"""A global node heard from before its link is up: two globals that dial
each other at once talk on a connection that is still settling (see
aemp/net/_network.py, _settle) before either side counts the link as up.
What changes in that window must still reach the other side.

Seen as a flaky CLI test (test_cli_inspect's stopped-global case, about one
run in five): s1 registered a service entry while its link to s2 was still
settling, the g_upd was dropped, and s2 never listed the entry.
"""

from __future__ import annotations

from typing import Any

from aemp.db._service import REQUESTS, Global


class Host:
    """The little of db._host.Host that Global uses, with the links in `up`."""

    def __init__(self, nodeid: str) -> None:
        self.id = nodeid
        self.up: set[str] = set()
        self.sent: list[tuple[Any, ...]] = []

    def node_is_up(self, nodeid: str) -> bool:
        return nodeid in self.up

    def request(self, nodeid: str, tag: str, *args: Any) -> None:
        self.sent.append((nodeid, tag, *args))

    def post(self, fn: Any, *args: Any) -> None:
        fn(*args)


class Owner:
    def __init__(self) -> None:
        self.own: dict[tuple[str, str], Any] = {}
        self.answers: list[tuple[str, list[Any]]] = []

    def set_own(self, family: str, key: str, value: Any) -> None:
        self.own[family, key] = value

    def del_own(self, family: str, key: str) -> None:
        self.own.pop((family, key), None)

    def answer(self, tag: str, args: list[Any]) -> None:
        self.answers.append((tag, args))

    def globals_changed(self) -> None:
        pass

    def synced(self) -> None:
        pass


def make(nodeid: str) -> tuple[Global, Host]:
    host = Host(nodeid)
    return Global(host, Owner(), REQUESTS), host  # type: ignore[arg-type]


def test_a_change_made_while_the_link_settles_reaches_the_other_global() -> None:
    s1, host = make("s1")
    # s2's g_global comes on a connection that is not s1's link yet: s1
    # answers (g_global, g_set of what it has), queued for that link
    s1.request("s2", "g_global", [])
    assert [m[:2] for m in host.sent] == [("s2", "g_global"), ("s2", "g_set")]
    host.sent.clear()
    # a service registers on s1 before the link is up there
    s1.update("s1", "jobs", {"s1#svc": "s1"}, None)
    assert host.sent == []  # not up: nothing goes out
    host.up.add("s2")
    s1.node_up("s2")
    g_set = [m for m in host.sent if m[:2] == ("s2", "g_set")]
    assert g_set, host.sent
    assert g_set[-1][2]["jobs"] == {"s1#svc": "s1"}


def test_a_subscriber_heard_from_while_its_link_settles_gets_the_view_again() -> None:
    s1, host = make("s1")
    s1.request("w", "g_mon1", ["jobs"])
    assert host.sent == [("w", "g_chg1", "jobs", None)]
    host.sent.clear()
    s1.update("s1", "jobs", {"s1#svc": "s1"}, None)
    assert host.sent == []
    host.up.add("w")
    s1.node_up("w")
    assert ("w", "g_chg1", "jobs", {"s1#svc": "s1"}) in host.sent


def test_a_link_that_comes_up_first_sends_no_view_twice() -> None:
    """The usual order (link up, then g_global both ways) is unchanged:
    node_up sends g_global alone, and the view follows the peer's g_global."""
    s1, host = make("s1")
    host.up.add("s2")
    s1.node_up("s2")
    assert host.sent == [("s2", "g_global")]
    s1.request("s2", "g_global", [])
    assert [m[:2] for m in host.sent] == [("s2", "g_global"), ("s2", "g_set")]
