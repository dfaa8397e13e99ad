# eg/jobqueue.py: a job queue that survives crashes (docs/intro.md, part 10).
# Start the hosts (aemp run ... services eg.jobqueue), then, from the checkout:
#   python eg/jobqueue.py supervisor jobs1 jobs2 jobs3   # keeps 3 workers running
#   python eg/jobqueue.py client [JOBS]                  # runs JOBS jobs (10000)
import asyncio
import collections
import hashlib
import os
import sys
import tempfile
import time
from typing import Any

import aemp
from aemp.pool import Pool, offer
from aemp.supervisor import Child, Event, Supervisor

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
WORKERS = 3
CRASHES = 2000  # about one job in 2000 raises or crashes its worker
LIMIT = 8  # jobs a worker runs at once
CRASH_SEED = 5  # which jobs crash: change it for others


def fate(n: int) -> str | None:
    """What job n does besides its work: "raise", "exit" or None; the same every run."""
    draw = int.from_bytes(hashlib.sha256(f"jobqueue{CRASH_SEED}:{n}".encode()).digest()[:4], "big")
    return {0: "raise", 1: "exit"}.get(draw % (2 * CRASHES))


_logs: dict[str, int] = {}  # records directory -> this process's file in it


def record(records: str, what: str, n: int, port: str) -> None:
    """Note that job n started, raised, crashed its worker or finished on port."""
    if records not in _logs:
        path = os.path.join(records, f"ran-{os.getpid()}.log")
        _logs[records] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(_logs[records], f"{what} {n} {port}\n".encode())  # kept even if killed -9


def first_crash(records: str, n: int) -> bool:
    """A crash strikes a job once (sent again, it runs): a marker file says it struck."""
    try:
        os.close(os.open(os.path.join(records, f"exit-{n}"), os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


@aemp.spawnable  # the supervisor starts it on a host
def worker() -> None:
    """Runs on a host as the supervised child: offers "jobqueue" while it lives."""
    me = aemp.self_port()

    async def job(n: int, records: str) -> int:
        record(records, "start", n, me)
        await asyncio.sleep(0.02)  # the work
        if fate(n) == "raise":
            record(records, "raise", n, me)
            raise ValueError(f"job {n} has bad input")
        if fate(n) == "exit" and first_crash(records, n):
            record(records, "exit", n, me)
            aemp.kil(me, "exit", f"job {n} crashed its worker")
            await asyncio.Event().wait()  # cancelled when the worker dies
        record(records, "done", n, me)
        return n * n

    functions = offer({"jobqueue": job}, limit=LIMIT)
    aemp.mon(me, functions.port)  # killed by the supervisor: the offer goes
    aemp.mon(functions.port, me)  # and the other way round


def show(event: Event) -> None:
    if event.kind in ("started", "restarted", "moved"):
        where = "to" if event.kind == "moved" else "on"
        print(f"supervisor: {event.child} {event.kind} {where} {event.node} as {event.port}")
    elif event.kind == "exited":
        print(f"supervisor: {event.child} died with {event.reason[:2]}")
    elif event.kind == "gave_up":
        print(f"supervisor: giving up, {event.reason[1]}")


async def supervise(hosts: list[str]) -> None:
    node = await aemp.configure("jobqueue_supervisor", seeds=[SEED], secret=SECRET)
    async with node:
        children = [Child(f"w{i + 1}", "eg.jobqueue:worker") for i in range(WORKERS)]
        # a crash is a restart: more than 10 within 10 s and something is badly wrong
        supervisor = Supervisor(children, hosts=hosts, max_restarts=10, period=10, on_event=show)
        await supervisor.wait_closed()


async def client(jobs: int) -> None:
    records = tempfile.mkdtemp(prefix="jobqueue-")
    print(f"records in {records}")
    node = await aemp.configure("jobqueue_client", seeds=[SEED], secret=SECRET)
    async with node, Pool("jobqueue") as pool:
        await pool.wait_for_workers(WORKERS, timeout=30)
        start = time.monotonic()

        def progress(done: int, total: int | None) -> None:
            if done % 1000 == 0:
                print(f"{done}/{total} done, {done / (time.monotonic() - start):.0f} jobs/s")

        results = pool.imap_unordered(
            [(n, records) for n in range(jobs)],
            star=True,
            concurrency=WORKERS * LIMIT,
            idempotent=True,  # a job whose worker died may run again elsewhere
            return_exceptions=True,  # a job that raised is that job's result
            progress=progress,
        )
        got: dict[int, tuple[Any, float]] = {}  # job -> (result, when it came)
        async for n, result in results.indexed():
            assert n not in got, f"job {n} answered twice"
            got[n] = (result, time.time())
        took = time.monotonic() - start
        report(records, jobs, got, took, pool.moved)


def report(
    records: str, jobs: int, got: dict[int, tuple[Any, float]], took: float, moved: int
) -> None:
    """Check the results, keep them for tests, and count the jobs that ran twice."""
    assert sorted(got) == list(range(jobs))
    raised = sorted(n for n, (r, _) in got.items() if isinstance(r, aemp.RemoteError))
    assert all(got[n][0] == n * n for n in got if n not in raised)
    with open(os.path.join(records, "client.log"), "w") as f:
        f.writelines(f"{n} {t} {type(r).__name__}\n" for n, (r, t) in got.items())
    starts: collections.Counter[int] = collections.Counter()
    for name in os.listdir(records):
        if name.startswith("ran-"):
            with open(os.path.join(records, name)) as f:
                starts.update(int(n) for what, n, _ in map(str.split, f) if what == "start")
    print(f"{jobs} jobs, one result each, in {took:.1f} s: {jobs / took:.0f} jobs/s")
    print(f"raised: {', '.join(f'{n} ({got[n][0].type})' for n in raised) or 'none'}")
    twice = sum(c - 1 for c in starts.values())
    print(f"ran again after their worker died: {twice} ({moved} calls moved)")


if __name__ == "__main__":
    role, args = sys.argv[1] if len(sys.argv) > 1 else "", sys.argv[2:]
    try:
        if role == "supervisor" and args:
            aemp.run(supervise(args))
        elif role == "client" and len(args) <= 1 and all(a.isdigit() for a in args):
            aemp.run(client(int(args[0]) if args else 10000))
        else:
            sys.exit("usage: python eg/jobqueue.py supervisor HOST... | client [JOBS]")
    except KeyboardInterrupt:
        pass
