"""The job queue of docs/intro.md (part 10, eg/jobqueue.py) with its processes for real.

A seed, three worker hosts started with the tutorial's `aemp run` command,
the example's supervisor (which keeps three pool workers running on the
hosts) and its client (10,000 jobs over the pool), each a process of its
own. About one job in 2,000 raises or crashes its worker; one host is
killed with SIGKILL in the middle of the run. The records the workers
write (every start, raise, crash and finish, with the worker's port) and
the client writes (every result it got) show that every job completed,
that the client got each result once, that the jobs that raised ran once
and came back as RemoteError, and that a job ran twice only when a worker
it ran on died.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import until
from test_tutorial import ROOT, Net, commands
from test_tutorial import net as net  # the fixture: a seed's address, the environment

sys.path.insert(0, str(ROOT))

from eg.jobqueue import fate

JOBS = 10_000
LIFE = re.compile(r"^supervisor: (w\d) (?:started|restarted|moved) (?:on|to) \S+ as (\S+)$")
HOSTS = ("jobs1", "jobs2", "jobs3")


def read_records(records: Path) -> list[tuple[str, int, str]]:
    """(what, job, worker port) for every line the workers wrote."""
    out = []
    for path in records.glob("ran-*.log"):
        for line in path.read_text().splitlines():
            what, n, port = line.split()
            out.append((what, int(n), port))
    return out


async def test_jobs_survive_crashes_and_a_host_killed_mid_run(net: Net) -> None:
    await net.seed()
    (words,) = commands("python -m aemp run jobs1")
    hosts = {h: await net.aemp_run([w.replace("jobs1", h) for w in words]) for h in HOSTS}
    sup = await net.example("jobqueue.py", "supervisor", *HOSTS)
    placed = {}
    for _ in HOSTS:
        m = await sup.expect(r"^supervisor: (w\d) started on (jobs\d) as \S+$")
        placed[m.group(2)] = m.group(1)
    assert sorted(placed) == list(HOSTS), "one worker on each host"

    client = await net.example("jobqueue.py", "client", str(JOBS))
    records = Path((await client.expect(r"^records in (\S+)$", 30)).group(1))
    await client.expect(r"^3000/10000 done, \d+ jobs/s$", 60)
    victim = "jobs2"
    hosts[victim].signal(signal.SIGKILL)
    killed = time.time()
    await sup.expect(rf"^supervisor: {placed[victim]} died with \('transport_error', '{victim}'\)$")
    restarted = await sup.expect(rf"^supervisor: {placed[victim]} restarted on (jobs[13]) as \S+$")
    restart_after = time.time() - killed
    hosts[victim] = await net.aemp_run([w.replace("jobs1", victim) for w in words])
    back = time.time()
    # the host is back: the supervisor moves one worker there
    await sup.expect(rf"^supervisor: w\d moved to {victim} as \S+$")
    moved_after = time.time() - back
    assert await client.wait(90) == 0, client.transcript() + sup.transcript()

    # the client: one result per job, in its own record and its summary
    got = collections.Counter()
    when = {}
    kinds = {}
    for line in (records / "client.log").read_text().splitlines():
        n, t, kind = line.split()
        got[int(n)] += 1
        when[int(n)] = float(t)
        kinds[int(n)] = kind
    assert sorted(got) == list(range(JOBS)) and set(got.values()) == {1}
    should_raise = sorted(n for n in range(JOBS) if fate(n) == "raise")
    should_exit = sorted(n for n in range(JOBS) if fate(n) == "exit")
    assert should_raise and should_exit, "the run has crashes of both kinds"
    assert sorted(n for n, k in kinds.items() if k == "RemoteError") == should_raise
    assert {k for n, k in kinds.items() if n not in should_raise} == {"int"}
    summary = client.out[-3:]
    m = re.match(r"^10000 jobs, one result each, in ([\d.]+) s: (\d+) jobs/s$", summary[0])
    assert m, client.transcript()
    assert summary[1] == "raised: " + ", ".join(f"{n} (ValueError)" for n in should_raise)
    m2 = re.match(r"^ran again after their worker died: (\d+) \((\d+) calls moved\)$", summary[2])
    assert m2, client.transcript()
    again, moved = int(m2.group(1)), int(m2.group(2))

    # the workers: what ran where
    recs = read_records(records)
    starts = collections.defaultdict(list)
    for what, n, port in recs:
        if what == "start":
            starts[n].append(port)
    ends = collections.Counter((n, port) for what, n, port in recs if what in ("done", "raise"))
    assert sorted(starts) == list(range(JOBS)), "every job ran"
    assert sorted(n for what, n, _ in recs if what == "raise") == should_raise
    exits = {n: port for what, n, port in recs if what == "exit"}
    assert sorted(exits) == should_exit, "each crash struck once"

    # the workers that died, as the supervisor saw it: every port of a child but its last
    def lives() -> dict[str, list[str]]:
        out: dict[str, list[str]] = collections.defaultdict(list)
        for line in sup.out:
            if m := LIFE.match(line):
                out[m.group(1)].append(m.group(2))
        return out

    def dead_ports() -> set[str]:
        return {p for child in lives().values() for p in child[:-1]}

    await until(lambda: set(exits.values()) <= dead_ports(), 15, "every crash seen restarted")
    dead = dead_ports()
    # the ports on the killed host: those started there before its loss (not on its successor)
    loss = sup.out.index(f"supervisor: {placed[victim]} died with ('transport_error', '{victim}')")
    before = {line.rpartition(" as ")[2] for line in sup.out[:loss]}
    on_victim = {p for p in before if p.startswith(victim + "#")}
    assert on_victim <= dead
    assert on_victim
    ran_on = {p for runs in starts.values() for p in runs}
    assert ran_on <= {p for child in lives().values() for p in child}, (
        "only supervised workers ran jobs"
    )
    for n, ports in starts.items():
        # a job ran again only because a worker it ran on died: at most one run elsewhere
        assert len([p for p in ports if p not in dead]) <= 1, (n, ports)
    twice = sum(len(ports) - 1 for ports in starts.values())
    assert twice == again, "the client's count agrees"
    assert 0 < twice <= moved, "a job ran again only after its call moved"
    # the jobs under way on the killed host finished elsewhere, soon
    lost = {
        n for n, ports in starts.items() if any(p in on_victim and not ends[n, p] for p in ports)
    }
    assert lost, "jobs were under way on the killed host"
    recovered = max(when[n] for n in lost) - killed
    print(
        f"\n{summary[0]}; {twice} ran again, {moved} moved, {len(lost)} lost on {victim}, "
        f"answered {recovered:.2f} s after the SIGKILL; "
        f"{placed[victim]} restarted on {restarted.group(1)} {restart_after:.2f} s after it; "
        f"a worker moved back {moved_after:.2f} s after the host came back"
    )
    shutil.rmtree(records)
    net.check_no_tracebacks()


def test_crashes_are_about_one_job_in_2000_and_the_same_every_run() -> None:
    fates = collections.Counter(fate(n) for n in range(200_000))
    assert 0.7 / 2000 < (fates["raise"] + fates["exit"]) / 200_000 < 1.3 / 2000
    assert fates["raise"] > 30 and fates["exit"] > 30, fates
    assert [fate(n) for n in range(10_000)] == [fate(n) for n in range(10_000)]


@pytest.mark.parametrize(
    "args", [[], ["client", "many"], ["client", "1", "2"], ["supervisor"], ["worker"]]
)
def test_a_wrong_command_line_gets_the_usage(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "eg" / "jobqueue.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "usage: python eg/jobqueue.py supervisor HOST... | client [JOBS]\n"
