"""aemp:// under a partition between two global nodes, and its heal.

Two globals linked in memory (aemp.testing), on virtual time. While the
link is silent each side leads its own table and may grant the same name;
on heal the older grant keeps it, the other holder is told through its
keep-alive errors, and list() shows one holder.
"""

from __future__ import annotations

import asyncio

import pytest

from aemp import lowlevel, names, testing

pytestmark = pytest.mark.virtual_time


async def test_both_sides_may_grant_and_the_older_grant_wins_on_heal() -> None:
    async with testing.mesh(["a", "b"], monitor_timeout=1) as mesh:
        a, b = mesh["a"], mesh["b"]
        names.serve(a)
        names.serve(b)
        await testing.wait_until(lambda: lowlevel.database(b)["globals"] == ["a"], 5)
        ma = await names.open("aemp://", node=a, ttl=1.0)
        mb = await names.open("aemp://", node=b, ttl=1.0)
        await ma.acquire("p")
        await ma.release("p", "0")
        held_a = await ma.try_hold("p", "0")
        with pytest.raises(names.NameInUse):
            await mb.try_acquire("p", "0")

        link = mesh.link("a", "b")
        link.partition()
        await testing.wait_until(lambda: lowlevel.database(b)["globals"] == [], 5)
        # b leads its side now: after its quiet period a's lease lapsed there
        held_b = await mb.try_hold("p", "0")
        assert not held_a.lost and not held_b.lost  # two holders, one per side

        link.heal()
        link.reconnect()
        await testing.wait_until(lambda: lowlevel.database(b)["globals"] == ["a"], 5)
        async with asyncio.timeout(10):
            errors = [e async for e in held_b.errors()]
        assert held_b.lost and isinstance(errors[-1], names.NameLost)
        assert "held by another grant" in str(errors[-1])
        assert not held_a.lost
        for m in (ma, mb):
            [rec] = await m.list("p")
            assert not rec.free and rec.token == held_a.token
        with pytest.raises(names.NameInUse):
            await mb.try_acquire("p", "0")
        await held_a.release()
        assert (await mb.try_acquire("p", "0")).token > held_a.token
        await ma.aclose()
        await mb.aclose()


async def test_a_new_leader_adopts_the_leases_of_the_old_one() -> None:
    # a (the leader) is cut off; b leads b and c after its quiet period and
    # b's holder keeps its name throughout; a, alone, lets it lapse and may
    # grant it again; on heal b's older grant wins and a's holder is told
    async with testing.mesh(["a", "b", "c"], monitor_timeout=1) as mesh:
        for n in mesh.nodes:
            names.serve(n)
        a, b = mesh["a"], mesh["b"]
        await testing.wait_until(lambda: len(lowlevel.database(a)["globals"]) == 2, 5)
        ma = await names.open("aemp://", node=a, ttl=3.0)
        mb = await names.open("aemp://", node=b, ttl=3.0)
        held_b = await mb.hold("q")
        links = [mesh.link("a", "b"), mesh.link("a", "c")]
        for link in links:
            link.partition()
        await testing.wait_until(lambda: lowlevel.database(b)["globals"] == ["c"], 5)

        async def take() -> names.Holding | None:
            try:
                return await ma.try_hold("q", held_b.name)
            except names.NameInUse:
                return None

        held_a = await testing.wait_until(take, 5)  # on a's side it lapses
        await asyncio.sleep(6)  # two ttls: b's quiet period and renewals
        assert not held_b.lost and not held_a.lost
        for link in links:
            link.heal()
            link.reconnect()
        async with asyncio.timeout(10):
            errors = [e async for e in held_a.errors()]
        assert isinstance(errors[-1], names.NameLost) and not held_b.lost
        for m in (ma, mb):
            [rec] = await m.list("q")
            assert not rec.free and rec.token == held_b.token
        await ma.aclose()
        await mb.aclose()


async def test_malformed_requests_harm_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with testing.pair(monitor_timeout=1) as (a, b, _link):
        names.serve(a)
        names.serve(b)
        await testing.wait_until(lambda: lowlevel.database(b)["globals"] == ["a"], 5)
        ma = await names.open("aemp://", node=a, ttl=1.0)
        held = await ma.hold("m")
        bad_requests = [
            ("g_names", "grant", None, "not a list"),
            ("g_names", "grant", None, ["m"]),
            ("g_names", "renew", "someone-else", ["m", "0", held.token, 1.0]),
            ("g_names", "explode", None, []),
            ("g_names", "grant", None, ["bad family", None, False, 1.0]),
            ("g_names", "renew", None, ["m", "0", "token", 1.0]),
            ("g_names_merge", "not a snapshot"),
            ("g_names_merge", [1, [["m", "0", [1, 2, 3]]]]),
            ("g_names_sync", 1, "changes", False),
        ]
        replies = []
        for req in bad_requests:
            reply = b.port(lambda *r: replies.append(r))
            lowlevel.request(b, "a", *req, reply)
        await asyncio.sleep(2)  # renewals go on meanwhile
        assert not held.lost
        [rec] = await ma.list("m")
        assert not rec.free and rec.token == held.token
        # every grant and renewal refused; the renewal in another's name (b, a
        # global, may pass requests on) only as a renewal of a lease it lacks
        assert sorted(r[0] for r in replies) == ["error"] * 5 + ["lost"], replies
        assert "malformed 'g_names" in caplog.text
        await ma.aclose()
