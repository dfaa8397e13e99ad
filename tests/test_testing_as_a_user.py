"""aemp.testing as a user's own tests would use it: public names only.

A pair of nodes linked in memory, on a virtual-time loop: a 30 s cal
timeout passes in milliseconds of real time, a cut link fires the
monitors, and a wait that fails says what it waited for.
"""

from __future__ import annotations

import time

import pytest

import aemp
from aemp import testing

pytestmark = pytest.mark.virtual_time  # tests/conftest.py: a VirtualTimeLoop


async def test_a_30_s_cal_timeout_takes_milliseconds() -> None:
    async with testing.pair() as (a, b, _link):
        silent = b.port(lambda *msg: None)  # never answers
        real = time.monotonic()
        start = a.loop.time()
        with pytest.raises(aemp.CallTimeout, match="within 30 s"):
            await a.cal(silent, "ask", timeout=30)
        assert 30 <= a.loop.time() - start < 31
        assert time.monotonic() - real < 1


async def test_a_cut_link_fires_the_monitors() -> None:
    async with testing.pair() as (a, b, link):
        reasons: list[tuple[object, ...]] = []
        port = b.port(lambda *msg: None)
        a.mon(port, lambda *reason: reasons.append(reason))
        link.cut("cable pulled")
        await testing.wait_until(lambda: reasons, timeout=1)
        assert reasons == [("transport_error", "b", "cable pulled")]
        assert not a.node_is_up("b")


async def test_a_failed_wait_says_what_it_waited_for() -> None:
    async with testing.pair() as (a, _b, _link):
        got: list[object] = []
        a.port(lambda *msg: got.append(msg))
        real = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            await testing.wait_until(lambda: len(got) > 2, timeout=30)
        message = str(e.value)
        assert "waited 30 s (loop time;" in message
        assert "for lambda: len(got) > 2" in message  # the predicate's source
        assert "last value False" in message
        assert time.monotonic() - real < 1
        with pytest.raises(TimeoutError, match="for three messages; last value 0"):
            await testing.wait_until(lambda: len(got), timeout=1, what="three messages")
