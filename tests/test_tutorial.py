"""docs/intro.md and the programs in eg/ it shows: they agree, and each one runs.

Every example runs as its own process against a seed started with the very
command docs/intro.md gives (on a free port and with a secret of the test's
own, handed to the examples through AEMP_SEED and AEMP_SECRET, as the
tutorial says). Every wait is bounded; every process is stopped by its own
PID when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

import aemp

ROOT = Path(__file__).resolve().parent.parent
INTRO = ROOT / "docs" / "intro.md"
EG = ROOT / "eg"
SECRET = "tutorial-test-secret"
WAIT = 15.0  # the longest any single expected line may take


# ---------------------------------------------------------------- the page and the files


def code_blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, marker) for every fenced block of a markdown text."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, lang = i, lines[i][3:].strip()
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            assert i < len(lines), f"intro.md:{start + 1}: unclosed code block"
            before = lines[start - 1].strip() if start else ""
            marker = before if before.startswith("<!--") else None
            out.append((start + 1, lang, "\n".join(lines[start + 1 : i]) + "\n", marker))
        i += 1
    return out


BLOCKS = code_blocks(INTRO.read_text())
_NAMES = re.compile(r"# (eg/[\w.]+\.py)\b")
_EXCERPT = re.compile(r"<!-- excerpt: (eg/[\w.]+\.py) -->")


def whole_files() -> dict[str, list[int]]:
    """eg/ file -> the lines of intro.md where a block shows it whole."""
    out: dict[str, list[int]] = {}
    for line, lang, code, _ in BLOCKS:
        m = _NAMES.match(code)
        if lang == "python" and m:
            out.setdefault(m.group(1), []).append(line)
    return out


def test_blocks_that_name_a_file_are_that_file() -> None:
    shown = whole_files()
    assert len(shown) >= 8, shown
    for line, lang, code, _ in BLOCKS:
        m = _NAMES.match(code)
        if lang == "python" and m:
            path = ROOT / m.group(1)
            assert path.exists(), f"intro.md:{line} shows {m.group(1)}, which does not exist"
            assert code == path.read_text(), f"intro.md:{line} differs from {m.group(1)}"


def test_excerpts_are_in_their_file() -> None:
    excerpts = [(line, code, _EXCERPT.match(marker)) for line, _, code, marker in BLOCKS if marker]
    for line, code, m in excerpts:
        assert m, f"intro.md:{line}: unknown marker before the block"
        assert code in (ROOT / m.group(1)).read_text(), f"intro.md:{line} is not in {m.group(1)}"


def test_every_example_is_in_the_tutorial() -> None:
    """Each eg/ program whose first line points to docs/intro.md is shown there whole."""
    shown = set(whole_files())
    mine = [p for p in EG.glob("*.py") if "(docs/intro.md" in p.read_text().partition("\n")[0]]
    assert len(mine) >= 10
    for path in sorted(mine):
        assert f"eg/{path.name}" in shown, f"docs/intro.md does not show eg/{path.name}"


def test_python_blocks_compile() -> None:
    for line, lang, code, _ in BLOCKS:
        if lang == "python":
            compile(textwrap.dedent(code), f"intro.md:{line}", "exec")


def commands(prefix: str) -> list[list[str]]:
    """The shell commands of intro.md that start with prefix, split into words."""
    found = []
    for _, lang, code, _ in BLOCKS:
        if lang == "console":
            for text in code.splitlines():
                if text.startswith("$ " + prefix):
                    found.append(shlex.split(text[2:]))
    assert found, f"intro.md shows no command starting with {prefix!r}"
    return found


# ---------------------------------------------------------------- processes


class Program:
    """One process of the tutorial; stopped by its own PID only."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self.cursor = 0  # expect() looks at stdout lines from here on
        self._more = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, self.out)),
            asyncio.ensure_future(self._read(proc.stderr, self.err)),
        ]

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))
            self._more.set()
        self._more.set()

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.proc.pid}>"

    def transcript(self) -> str:
        return "\n".join([f"--- {self.name} stdout", *self.out, "--- stderr", *self.err])

    async def expect(self, pattern: str, limit: float = WAIT, stream: str = "out") -> re.Match:
        """Wait for a line (after the last one expected) that matches pattern."""
        lines = self.out if stream == "out" else self.err
        start = self.cursor if stream == "out" else 0
        try:
            async with asyncio.timeout(limit):
                while True:
                    for i in range(start, len(lines)):
                        m = re.search(pattern, lines[i])
                        if m:
                            if stream == "out":
                                self.cursor = i + 1
                            return m
                    start = len(lines)
                    if self.proc.returncode is not None and all(r.done() for r in self._readers):
                        break
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"{self.name}: no line matching {pattern!r}\n{self.transcript()}")

    async def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait(self, limit: float = WAIT) -> int:
        async with asyncio.timeout(limit):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self) -> None:
        """Ctrl-C, then SIGKILL if it did not end within a few seconds."""
        self.signal(signal.SIGINT)
        try:
            await self.wait(5)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.proc.wait()
        for r in self._readers:
            r.cancel()


class Net:
    """A seed started as docs/intro.md says, and the programs run against it."""

    def __init__(self, env: dict[str, str], addrs: list[str]) -> None:
        self.env = env
        self.addr = addrs[0]
        # what the tutorial's commands say -> what the test uses
        self.subst = {"127.0.0.1:4040": addrs[0], "127.0.0.1:4041": addrs[1]}
        self.subst["tutorial-secret"] = SECRET
        self.started: list[Program] = []

    def words(self, words: list[str]) -> list[str]:
        """A command of the tutorial as the test runs it."""
        assert words[:3] == ["python", "-m", "aemp"], words
        out = []
        for w in words[3:]:
            for old, new in self.subst.items():
                w = w.replace(old, new)
            out.append(w)
        return [sys.executable, "-m", "aemp", *out]

    async def run(self, name: str, *args: str, stdin: bool = False) -> Program:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        p = Program(name, proc)
        self.started.append(p)
        return p

    async def example(self, file: str, *args: str, stdin: bool = False) -> Program:
        return await self.run(file, sys.executable, str(EG / file), *args, stdin=stdin)

    async def aemp_run(self, words: list[str]) -> Program:
        """A node started with a `python -m aemp run ...` line of the tutorial."""
        assert words[3] == "run", words
        p = await self.run(f"aemp run {words[4]}", *self.words(words))
        await p.expect(r"is up, listening on", stream="err")
        return p

    async def aemp(self, words: list[str]) -> Program:
        """Another `python -m aemp ...` line of the tutorial, run to its end."""
        p = await self.run(" ".join(words[2:5]), *self.words(words))
        assert await p.wait() == 0, p.transcript()
        return p

    async def seed(self, name: str = "seed") -> Program:
        (words,) = [w for w in commands("python -m aemp run seed") if w[4] == name]
        return await self.aemp_run(words)

    async def host(self, nodeid: str) -> Program:
        words = next(w for w in commands("python -m aemp run host") if "nodeid" in w)
        return await self.aemp_run([w.replace(words[4], nodeid) for w in words])

    async def stop_all(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.started))

    def check_no_tracebacks(self) -> None:
        """No example wrote a traceback (nodes run by `aemp run` log the crashes they host)."""
        for p in self.started:
            if p.name.startswith("aemp run"):
                continue
            assert not any("Traceback" in line for line in p.err), p.transcript()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    env = {
        **os.environ,
        "AEMP_SEED": addrs[0],
        "AEMP_SECRET": SECRET,
        "AEMP_CONFIG": str(tmp_path / "no-config.json"),
        "PYTHONUNBUFFERED": "1",
    }
    n = Net(env, addrs)
    try:
        yield n
    finally:
        await n.stop_all()


# ---------------------------------------------------------------- the examples


async def test_monitors_needs_no_seed(net: Net) -> None:
    p = await net.example("monitors.py")
    assert await p.wait() == 0, p.transcript()
    assert p.out == [
        "6 / 3 = 2.0",
        "monitor: calc died with ('die', 'ZeroDivisionError: division by zero')",
        "cal: calc died with ('die', 'ZeroDivisionError: division by zero')",
        "monitor: too late, no_such_port",
        "monitor: fetcher died with ('die', 'ConnectionError: cannot fetch "
        "http://example.invalid/')",
        "monitor: the child of a parent killed with ('error', 'disk full') died with "
        "('error', 'disk full')",
    ], p.transcript()
    assert p.err == [], p.transcript()


async def test_blocking_needs_no_seed(net: Net) -> None:
    (words,) = commands("python eg/blocking.py")
    p = await net.example("blocking.py", *words[2:])
    assert await p.wait() == 0, p.transcript()
    assert p.out == [
        "pong while the saver works",
        "saved a",
        "saved b",
        "saved c",
        "flushed after every save",
        "primes below 50000: 5133",
    ], p.transcript()
    assert p.err == [], p.transcript()


async def test_sender_and_receiver(net: Net) -> None:
    await net.seed()
    receiver = await net.example("receiver.py")
    port = (await receiver.expect(r"^receiver: my port is (\S+#\S+)$")).group(1)

    # part 1: the port ID copied by hand
    sender = await net.example("sender.py", port)
    assert await sender.wait() == 0, sender.transcript()
    assert sender.out == [f"sender: greeted {port}"]
    m = await receiver.expect(r"^receiver: 'hello, world' from (sender/\S+)$")
    assert m.group(1) != receiver.out[0]

    # part 3: found through the database, two receivers
    second = await net.example("receiver.py")
    port2 = (await second.expect(r"my port is (\S+)$")).group(1)
    watcher = await net.example("watch.py", "eg_receivers")
    await watcher.expect(r"^now 2: added \[.*\], changed \[\], deleted \[\]$")
    sender = await net.example("sender.py")
    assert await sender.wait() == 0, sender.transcript()
    assert sorted(sender.out) == sorted([f"sender: greeted {port}", f"sender: greeted {port2}"])
    await receiver.expect(r"^receiver: 'hello, world' from sender/")
    await second.expect(r"^receiver: 'hello, world' from sender/")

    # a receiver that ends (Ctrl-C) leaves the database; so does one killed with -9
    await second.stop()
    assert second.proc.returncode == 0, second.transcript()
    gone = r"^now {}: added \[\], changed \[\], deleted \['{}'\]$"
    await watcher.expect(gone.format(1, re.escape(port2)))
    receiver.signal(signal.SIGKILL)
    await watcher.expect(gone.format(0, re.escape(port)))
    net.check_no_tracebacks()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
async def test_chat_survives_the_server_restart(net: Net, sig: int) -> None:
    await net.seed()
    server = await net.example("chat_server.py")
    await server.expect(r"^chat server: ready at ")
    alice = await net.example("chat_client.py", "alice", stdin=True)
    await alice.expect(r"^\* joined the chat \(1 here\)$")
    bob = await net.example("chat_client.py", "bob", stdin=True)
    await bob.expect(r"^\* joined the chat \(2 here\)$")
    await alice.expect(r"^<\*> bob joined$")
    await alice.write("hello bob\n")
    await bob.expect(r"^<alice> hello bob$")

    server.signal(sig)
    for client in (alice, bob):
        await client.expect(r"^\* lost the server \(transport_error\), waiting for it")
    await alice.write("anybody there?\n")
    await alice.expect(r"^\* not connected, line dropped$")

    server = await net.example("chat_server.py")  # registers itself again
    await server.expect(r"^chat server: ready at ")
    for client in (alice, bob):
        await client.expect(r"^\* joined the chat \([12] here\)$")
    joined = {(await server.expect(r"^<\*> (\w+) joined$")).group(1) for _ in range(2)}
    assert joined == {"alice", "bob"}
    await bob.write("welcome back\n")
    await alice.expect(r"^<bob> welcome back$")

    # the server's half of the monitoring: a client that leaves is forgotten
    await bob.close_stdin()
    assert await bob.wait() == 0, bob.transcript()
    await alice.expect(r"^<\*> bob left$")
    net.check_no_tracebacks()


async def test_worker_pool_survives_a_worker_killed_mid_run(net: Net) -> None:
    await net.seed()
    workers = {}
    for _ in range(3):
        w = await net.example("pool_worker.py")
        port = (await w.expect(r"^pool worker: ready at (\S+)$")).group(1)
        workers[port.partition("#")[0]] = w
    jobs = 300
    client = await net.example("pool_client.py", str(jobs))
    answer = r"^job (\d+) -> (\d+) from (\S+)$"
    by = [(await client.expect(answer)).group(3) for _ in range(60)]
    assert set(by) == set(workers), "the jobs are spread over every worker"
    victim = by[-1]
    workers[victim].signal(signal.SIGKILL)  # in the middle of its jobs
    assert await client.wait(30) == 0, client.transcript()

    answers = [m.groups() for m in map(re.compile(answer).match, client.out) if m]
    numbers = [int(n) for n, _, _ in answers]
    assert sorted(numbers) == list(range(jobs)), "every job answered exactly once"
    assert all(int(r) == int(n) ** 2 for n, r, _ in answers)
    assert victim not in {w for _, _, w in answers[-100:]}, "the dead worker got no more jobs"
    lost = [line for line in client.out if "worker lost (transport_error)" in line]
    assert lost, "jobs were under way on the killed worker, and were sent again"
    summary = client.out[-1]
    assert summary == f"all {jobs} jobs answered, {len(lost)} sent again", client.transcript()
    net.check_no_tracebacks()


async def test_functions_on_a_bus_survive_a_worker_killed_mid_run(net: Net) -> None:
    await net.seed()
    workers = []
    for _ in range(3):
        w = await net.example("bus_worker.py")
        await w.expect(r"^bus worker: ready at (\S+)$")
        workers.append(w)
    jobs = 600
    client = await net.example("bus_client.py", str(jobs))
    await client.expect(r"^digest: 2cf24dba5fb0a30e$")
    await client.expect(r"^root\(-1\) raised ValueError: no square root of -1$")
    await client.expect(r"^100/600 done$")
    workers[2].signal(signal.SIGKILL)  # in the middle of its jobs
    assert await client.wait(30) == 0, client.transcript()  # map checked every answer
    assert client.out[-2] == "600/600 done", client.transcript()
    m = re.match(r"^all 600 jobs answered by ([23]) workers, (\d+) moved$", client.out[-1])
    assert m, client.transcript()
    net.check_no_tracebacks()


async def test_spawn_pair_watch_each_other(net: Net) -> None:
    await net.seed()
    host = await net.host("host1")
    p = await net.example("spawn_pair.py", "host1")
    assert await p.wait() == 0, p.transcript() + host.transcript()
    assert p.out == [
        "ping 1: ('pong', 1, 'host1')",
        "ping -1 failed: ('die', 'ValueError: cannot ping -1 times')",
        "first child died with ('die', 'ValueError: cannot ping -1 times')",
        "ping 2: ('pong', 2, 'host1')",
        "second child died with ('shutdown', 'the parent is done')",
    ], p.transcript() + host.transcript()
    net.check_no_tracebacks()


async def test_supervisor_restarts_remote_workers(net: Net) -> None:
    await net.seed()
    hosts = {name: await net.host(name) for name in ("host1", "host2")}
    sup = await net.example("supervisor.py", "host1", "host2")
    started = r"^supervisor: (w\d) (started|restarted|moved) (?:on|to) (host\d) as (\S+)$"
    ports = {}
    for _ in range(2):
        name, kind, host, port = (await sup.expect(started)).groups()
        ports[name] = port
        assert (kind, host) == ("started", {"w1": "host1", "w2": "host2"}[name])

    async with aemp.Node(nodeid="probe/%u", seeds=[net.addr], secret=SECRET) as probe:

        async def family() -> dict[str, Any]:
            return dict(await probe.db_family("eg_supervised", timeout=WAIT))

        async def until_family(want: dict[str, str]) -> None:
            async with asyncio.timeout(WAIT):
                while await family() != want:
                    await asyncio.sleep(0.05)

        # spawn() returns at once: the database says when the worker runs
        await until_family({ports["w1"]: "w1", ports["w2"]: "w2"})
        assert await probe.cal(ports["w1"], "work", 21, timeout=WAIT) == ("w1", 42)

        # a crash, sent with the aemp command as the tutorial shows: restarted on the same host
        config, snd = (
            commands("python -m aemp seeds 127.0.0.1:4040"),
            commands("python -m aemp snd"),
        )
        await net.aemp(config[0])
        await net.aemp([w.replace("host1#GotV9VaMBSa", ports["w1"]) for w in snd[0]])
        await sup.expect(
            r"^supervisor: w1 died with \('die', 'RuntimeError: w1 was asked to crash'\)$"
        )
        name, kind, host, ports["w1"] = (await sup.expect(started)).groups()
        assert (name, kind, host) == ("w1", "restarted", "host1")
        await until_family({ports["w1"]: "w1", ports["w2"]: "w2"})
        assert await probe.cal(ports["w1"], "work", 5, timeout=WAIT) == ("w1", 10)

        # its node killed: restarted on the other host
        hosts["host1"].signal(signal.SIGKILL)
        await sup.expect(r"^supervisor: w1 died with \('transport_error', 'host1'\)$")
        name, kind, host, ports["w1"] = (await sup.expect(started)).groups()
        assert (name, kind, host) == ("w1", "restarted", "host2")
        await until_family({ports["w1"]: "w1", ports["w2"]: "w2"})
        assert await probe.cal(ports["w1"], "work", 4, timeout=WAIT) == ("w1", 8)

        # the host comes back: one worker moves there, so that each host has one again
        hosts["host1"] = await net.host("host1")
        name, kind, host, port = (await sup.expect(started)).groups()
        assert (kind, host) == ("moved", "host1")
        ports[name] = port
        await until_family({ports["w1"]: "w1", ports["w2"]: "w2"})
        assert await probe.cal(port, "work", 3, timeout=WAIT) == (name, 6)

        # the supervisor ends: its workers follow it, and leave the database
        await sup.stop()
        assert sup.proc.returncode == 0, sup.transcript()
        await until_family({})

        # a worker that keeps crashing: it gives up instead of restarting forever
        lone = await net.example("supervisor.py", "host2")
        w1 = r"^supervisor: w1 (?:started|restarted) on host2 as (\S+)$"
        for _ in range(4):
            port = (await lone.expect(w1)).group(1)
            async with asyncio.timeout(WAIT):
                while port not in await family():  # it runs
                    await asyncio.sleep(0.05)
            probe.snd(port, "crash")
        await lone.expect(r"^supervisor: giving up, more than 3 restarts within 10 s ")
        assert await lone.wait() == 0, lone.transcript()
        assert sum(" restarted on " in line for line in lone.out) == 3, lone.transcript()
        await until_family({})
    net.check_no_tracebacks()


async def test_two_seeds_and_the_configuration_file(net: Net) -> None:
    seeds = [await net.seed("seed1"), await net.seed("seed2")]
    (config,) = commands("python -m aemp seeds '[")
    await net.aemp(config)  # every example now uses both seeds
    first = await net.example("receiver.py")
    port1 = (await first.expect(r"my port is (\S+)$")).group(1)
    watcher = await net.example("watch.py", "eg_receivers")
    await watcher.expect(r"^now 1: added ")

    seeds[0].signal(signal.SIGKILL)  # the nodes that had it as master move to seed2
    second = await net.example("receiver.py")
    port2 = (await second.expect(r"my port is (\S+)$")).group(1)
    await watcher.expect(rf"^now 2: added \['{re.escape(port2)}'\]")
    sender = await net.example("sender.py")
    assert await sender.wait() == 0, sender.transcript()
    assert sorted(sender.out) == sorted(f"sender: greeted {p}" for p in (port1, port2))
    for r in (first, second):
        await r.expect(r"^receiver: 'hello, world' from sender/")
    net.check_no_tracebacks()


def test_the_commands_name_files_that_exist() -> None:
    runs = commands("python eg/")
    assert len(runs) >= 10
    for words in runs:
        assert (ROOT / words[1]).exists(), words


def test_links_resolve() -> None:
    from tests.test_docs_api import _anchors

    text = INTRO.read_text()
    assert "intro.md" in (ROOT / "docs" / "README.md").read_text()
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        target, _, anchor = link.partition("#")
        path = (INTRO.parent / target) if target else INTRO
        assert path.exists(), f"intro.md: link to a missing file {link!r}"
        if anchor:
            assert anchor in _anchors(path), f"intro.md: no heading for {link!r}"


async def test_chat_survives_a_server_that_stops_answering(net: Net) -> None:
    """Ctrl-Z on the server for longer than monitor_timeout, then fg."""
    await net.aemp(commands("python -m aemp monitor_timeout")[0])
    await net.seed()
    server = await net.example("chat_server.py")
    await server.expect(r"^chat server: ready at ")
    alice = await net.example("chat_client.py", "alice", stdin=True)
    await alice.expect(r"^\* joined the chat \(1 here\)$")

    server.signal(signal.SIGSTOP)
    await alice.expect(r"^\* lost the server \(transport_error\), waiting for it")
    server.signal(signal.SIGCONT)
    await server.expect(r"^<\*> alice left$")
    await alice.expect(r"^\* joined the chat \(1 here\)$")
    await alice.write("still here\n")
    await alice.expect(r"^<alice> still here$")
    net.check_no_tracebacks()


async def test_receive_needs_no_seed(net: Net) -> None:
    (words,) = commands("python eg/receive.py")
    p = await net.example("receive.py", *words[2:])
    assert await p.wait() == 0, p.transcript()
    assert p.out == [
        "kitchen: cooking water",
        "kitchen: cooking soup",
        "kitchen: cooking steak",
        "kitchen: closing",
        "customer got ('served', 'steak')",
        "customer got ('served', 'water') ('served', 'soup')",
        "kitchen ended with ('closed',)",
        "no more dishes within 0.5 s",
    ], p.transcript()
    assert p.err == [], p.transcript()


async def test_logs_needs_no_seed(net: Net) -> None:
    (words,) = commands("python eg/logs.py")
    p = await net.example("logs.py", *words[2:])
    assert await p.wait() == 0, p.transcript()
    assert p.out == [
        "shop INFO shop sold 3 apples, 2 left",
        "shop ERROR shop no pears in stock",
        "    KeyError: 'pears'",
        "shop INFO shop sold 1 apples, 1 left",
    ], p.transcript()
    assert p.err == [], p.transcript()


async def test_aemp_log_shows_what_the_hub_kept(net: Net) -> None:
    await net.aemp(commands("python -m aemp seeds 127.0.0.1:4040")[-1])
    (hub,) = commands("python -m aemp run hub")
    await net.aemp_run(hub)
    (log,) = [w for w in commands("python -m aemp log") if len(w) == 4]
    p = await net.aemp([*log, "--bind", "127.0.0.1:0"])  # the test listens on loopback only
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} hub INFO "
    lines = [re.sub(stamp, "", line) for line in p.out]
    assert lines[:2] == [
        "aemp.services: node hub: service aemp.logcatch:forward started",
        f"aemp.cli: node hub is up, listening on {net.addr}",
    ], p.transcript()
    # and the link of `aemp log` itself, as the hub logged it when it came up
    assert len(lines) == 3, p.transcript()
    assert re.fullmatch(
        r"aemp\.transport: node hub: link to anon/\S+ up \(accepted, 127\.0\.0\.1:\d+\)", lines[2]
    ), p.transcript()
