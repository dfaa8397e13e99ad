"""eg/diskd.py (docs/diskd.md) with discovery only, on three "machines".

Three network namespaces made by tests/netns.py, a daemon in each with
its own fake lsblk answer (distinct disks), its own runtime directory (so
its own control socket, as on a machine of its own), discovery and no
seeds; `python eg/diskd.py list`, run inside the first namespace, must
show the disks of all three. Multicast never leaves these namespaces.

The figure: how long from the start of the three daemons until `list`
shows every disk of the three; printed by the test (run with -s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from diskd_helpers import Daemon, lsblk_json, rows, run_list, rundir

LAN = netns.Lan("d", 3)
CHANNEL = "multicast:239.255.65.77:4044;interface=eth0;interval=1"


@pytest.fixture(scope="module")
def lan() -> Iterator[netns.Lan]:
    with netns.made(LAN, "the diskd example's namespace test") as made:
        yield made


async def test_list_in_one_namespace_shows_the_disks_of_all_three(
    lan: netns.Lan, tmp_path: Path
) -> None:
    disks = {
        1: lsblk_json(("nvme0n1", 512 * 2**30, []), ("nvme0n1p1", 511 * 2**30, ["/"])),
        2: lsblk_json(("sdb", 4 * 2**40, ["/srv/backup"])),
        3: lsblk_json(("sdc", 8 * 2**30, []), ("sdc1", 8 * 2**30, [None])),
    }
    runs = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    daemons = []
    try:
        for i in (1, 2, 3):
            fake = tmp_path / f"disks{i}.json"
            fake.write_text(disks[i])
            runs[i] = rundir(tmp_path, f"run{i}")
            d = await Daemon.start(
                runs[i], "--nodeid", f"diskd/n{i}", "--bind", f"10.77.0.{i}:4041",
                "--discovery", CHANNEL, "--interval", "1", "--fake", str(fake), ns=lan.ns(i),
            )  # fmt: skip
            daemons.append(d)
        want = [
            ["diskd/n1", "nvme0n1", "512.0G", "no", "-"],
            ["diskd/n1", "nvme0n1p1", "511.0G", "yes", "/"],
            ["diskd/n2", "sdb", "4.0T", "yes", "/srv/backup"],
            ["diskd/n3", "sdc", "8.0G", "no", "-"],
            ["diskd/n3", "sdc1", "8.0G", "no", "-"],
        ]
        out = err = ""
        for _ in range(200):
            rc, out, err = await run_list(runs[1], ns=lan.ns(1))
            if rc == 0 and rows(out) == want:
                break
            assert rc == 0 or "no diskd node runs on this host" in err, (out, err)
            await asyncio.sleep(0.2)
            assert loop.time() - started < 40, f"list never showed all three; last:\n{out}{err}"
        else:
            raise AssertionError(f"list never showed all three; last:\n{out}{err}")
        took = loop.time() - started
        assert "(5 disks on 3 machines, as diskd/n1 sees them)" in out
        # from each of the other two "machines" too: each asks its own node
        for i in (2, 3):
            rc, out, err = await run_list(runs[i], ns=lan.ns(i))
            assert rc == 0 and rows(out) == want, (out, err)
            assert f"as diskd/n{i} sees them" in out
        for d in daemons:
            assert d.proc.returncode is None
            assert not [line for line in d.err if "WARNING" in line or "ERROR" in line], d.err
        print(f"\ndiskd: list in n1 showed the disks of all three namespaces {took:.2f} s "
              "after the three daemons were started")  # fmt: skip
    finally:
        for d in daemons:
            await d.stop()
