"""The aemp demo: a small network of processes, watched from this one.

Run with ``python3 dev.py demo``. It starts a seed node and three worker
nodes, each a process of its own running eg/workers.py on 127.0.0.1 with
a freshly generated secret, joins them as the node "demo", and shows:

1. the workers registering in the distributed database (``db_reg``) while
   the demo watches that family (``db_mon``);
2. ``cal`` across processes;
3. ``spawn`` of a port on a worker node, and a monitor (``mon``) that fires
   when that port dies;
4. a supervisor that keeps a job running: when the worker process it runs
   on is killed with SIGKILL, the job's monitor fires with
   ``("transport_error", ...)``, the worker's entry vanishes from the
   database, and the supervisor restarts the job on another worker.

Every process it starts is stopped by its PID at the end, also when the
demo is interrupted (Ctrl-C) or fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aemp

WORKERS_PY = Path(__file__).resolve().parent / "workers.py"
T0 = time.monotonic()
NEWS = asyncio.Event()  # set by the callbacks below when they changed something


async def until(cond: Callable[[], bool]) -> None:
    """Wait until cond() is true; main() bounds the whole demo, so this cannot hang."""
    while not cond():
        NEWS.clear()
        await NEWS.wait()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.3f}s] {text}", flush=True)


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class Processes:
    """The node processes the demo starts; ``async with`` stops them all by PID."""

    def __init__(self, secret: str) -> None:
        self.env = {**os.environ, "AEMP_DEMO_SECRET": secret}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.relays: list[asyncio.Task[None]] = []

    async def start(self, name: str, seed: str) -> None:
        """Run ``eg/workers.py NAME SEED`` and wait until it says "ready"."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKERS_PY),
            name,
            seed,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,  # closes when the demo ends: no process outlives it
            stdout=asyncio.subprocess.PIPE,  # stdout and stderr go into this transcript
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the demo only, which stops the rest
        )
        self.procs[name] = proc
        say(f"started {name} as process {proc.pid}")
        assert proc.stdout is not None and proc.stderr is not None
        self.relays.append(asyncio.create_task(self.relay(f"{name} logs", proc.stderr)))
        if await asyncio.wait_for(proc.stdout.readline(), 10) != b"ready\n":
            raise RuntimeError(f"{name} (process {proc.pid}) did not start")
        self.relays.append(asyncio.create_task(self.relay(f"{name} prints", proc.stdout)))

    async def relay(self, what: str, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            say(f"    ({what}: {line.decode().rstrip()})")

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def kill9(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGKILL)

    async def __aenter__(self) -> Processes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGTERM)  # each closes its node and exits
        for name, proc in self.procs.items():
            try:
                status = await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                status = await proc.wait()
            how = f"exit status {status}" if status >= 0 else signal.Signals(-status).name
            say(f"process {proc.pid} ({name}) is gone: {how}")
        await asyncio.wait(self.relays, timeout=1)  # the last lines they printed
        for task in self.relays:
            task.cancel()


class Watch:
    """A db_mon on one family: says what changed and keeps the latest view."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.view: dict[str, Any] = {}  # port ID -> value
        self.calls = 0
        aemp.db_mon(family, self.changed)

    def changed(self, view: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
        for port in added:
            say(f"db_mon: {port} joined {self.family!r} with {view[port]}")
        for port in deleted:
            say(f"db_mon: {port} left {self.family!r}")
        self.view = dict(view)
        self.calls += 1
        nodes = ", ".join(sorted(aemp.node_of(port) for port in self.view)) or "nobody"
        say(f"db_mon: {self.family!r} now holds {nodes}")
        NEWS.set()


class Supervisor:
    """Keeps one job running on some worker and restarts it elsewhere when it dies."""

    def __init__(self, workers: Watch) -> None:
        self.workers = workers  # who can run the job
        self.job = ""
        self.restarts = 0
        self.ended = False

    def start(self, avoid: str = "") -> None:
        nodes = sorted({aemp.node_of(port) for port in self.workers.view} - {avoid})
        if not nodes:
            say("supervisor: no worker left to run the job on")
            return
        self.job = aemp.spawn(nodes[0], "workers:squarer", f"job-{self.restarts + 1}")
        aemp.mon(self.job, self.on_death)
        say(f"supervisor: job running as {self.job}")

    def on_death(self, *reason: Any) -> None:
        if not reason:
            say("supervisor: the job exited normally, not restarting it")
            self.ended = True
            NEWS.set()
            return
        self.restarts += 1
        lost = aemp.node_of(self.job)
        say(f"supervisor: monitor fired, the job died with {reason}")
        say(f"supervisor: restarting the job away from {lost} (restart #{self.restarts})")
        self.start(avoid=lost)
        NEWS.set()


async def main() -> None:
    secret = secrets.token_hex(16)
    seed = free_address()
    say(f"this demo is process {os.getpid()}; the network's seed will listen on {seed}")
    async with Processes(secret) as procs, asyncio.timeout(30):
        await procs.start("seed", seed)
        node = await aemp.configure(
            norc=True, nodeid="demo", binds=["127.0.0.1:0"], seeds=[seed], secret=secret
        )
        master = await node.wait_joined(timeout=10)  # raises with the cause if it cannot
        say(f"node {node.id} joined through the seed ({master})")
        try:
            await show(procs, seed)
        finally:
            await node.close()


async def show(procs: Processes, seed: str) -> None:
    # 1. watch the family "workers", then start the workers that register in it
    workers = Watch("workers")
    await until(lambda: workers.calls > 0)
    await asyncio.gather(*(procs.start(f"worker-{i}", seed) for i in (1, 2, 3)))
    await until(lambda: len(workers.view) == 3)

    # 2. cal: a request to a port in another process, and its reply
    for port in sorted(workers.view):
        name, pid = await aemp.cal(port, "whoami", timeout=5)
        say(f"cal({port}, 'whoami') -> {name}, process {pid}")

    # 3. spawn a port on a worker node, call it, and watch it die
    squarer = aemp.spawn("worker-1", "workers:squarer", "squarer")
    say(f"spawn('worker-1', 'workers:squarer') -> {squarer}")
    result, by = await aemp.cal(squarer, "square", 12, timeout=5)
    say(f"cal square(12) -> {result}, computed by {by}")
    died = asyncio.get_running_loop().create_future()
    aemp.mon(squarer, lambda *reason: died.set_result(reason))
    try:
        await aemp.cal(squarer, "square", -1, timeout=5)
    except aemp.PortDead as e:
        say(f"cal square(-1) failed: {e}")
    say(f"monitor on {squarer} fired: {await died}")

    # 4. a supervised job; kill -9 the worker process it runs on
    supervisor = Supervisor(workers)
    supervisor.start()
    result, by = await aemp.cal(supervisor.job, "square", 7, timeout=5)
    say(f"cal square(7) -> {result}, computed by {by}")
    victim = aemp.node_of(supervisor.job)
    (entry,) = [port for port in workers.view if aemp.node_of(port) == victim]
    say(f"SIGKILL {victim} (process {procs.pid(victim)})")
    procs.kill9(victim)
    await until(lambda: supervisor.restarts == 1 and entry not in workers.view)
    result, by = await aemp.cal(supervisor.job, "square", 8, timeout=5)
    say(f"cal square(8) -> {result}, computed by {by}")

    # a normal kill (no reason) is a normal exit: the supervisor lets it be
    aemp.kil(supervisor.job)
    await until(lambda: supervisor.ended)
    say("demo done; stopping every process it started")


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        say("interrupted; every process the demo started was stopped")
        sys.exit(130)
