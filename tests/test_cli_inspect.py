"""aemp nodes, db and trace against nodes that `aemp run` started, all in subprocesses.

Every node, watcher and command is a real `python -m aemp` process with the
temporary AEMP_CONFIG of conftest; each is stopped by its own PID, and every
wait is bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import Lines, Run, Server, aemp_cmd, env, free_port

from aemp._config import config_path

SERVICE = json.dumps([["cli_services:adder_service", "jobs"]])


@pytest.fixture(autouse=True)
def _through_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """These commands join the network here, as an anonymous node with the secret;
    through a local node's control socket they are tests/test_control_cli.py's."""
    monkeypatch.setenv("AEMP_NODE", "")


@pytest.fixture
def cfg() -> Path:
    return config_path()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


class Watcher:
    """`aemp db FAMILY --watch` in a subprocess: one JSON object per line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aemp", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
        )
        assert self.proc.stdout is not None
        self.out = Lines(self.proc.stdout)

    def next(self, limit: float = 20) -> Any:
        return json.loads(self.out.wait_for("", limit))

    def until(self, cond: Any, limit: float = 20) -> Any:
        deadline = time.monotonic() + limit
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if cond(event):
                return event

    def signal(self, sig: int, limit: float = 20) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        rest = self.out.rest(limit)[len("".join(self.out.seen)) :]
        rc = self.proc.wait(timeout=limit)
        assert self.proc.stderr is not None
        return rc, rest, self.proc.stderr.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def procs() -> Iterator[Any]:
    """start("run", ...) for a node, start("db", ...) for a watcher; all stopped at the end."""
    started: list[Server | Watcher] = []

    def start(kind: str, *args: str) -> Any:
        p: Server | Watcher = Server(*args) if kind == "run" else Watcher(kind, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def ok(*args: str) -> str:
    r = aemp_cmd(*args)
    assert r.returncode == 0 and r.stderr == "", f"aemp {' '.join(args)}: {r.stderr}"
    return r.stdout


def listener(server: Server) -> str:
    return server.log.seen[-1].rstrip("\n").rsplit(" listening on ", 1)[1]


# ---------------------------------------------------------------- the whole round


def test_seed_and_worker_set_up_run_and_inspected_with_aemp(procs: Any, cfg: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    ok("profile", "seed", "nodeid", "seed", "binds", addr, "seeds", addr, "gensecret")
    ok("profile", "worker", "parent", "seed", "nodeid", "worker/%u", "binds", "127.0.0.1:0",
       "services", SERVICE, "profile", "aemp", "parent", "seed")  # fmt: skip
    worker_cfg = json.loads(ok("showprofile", "worker"))
    assert worker_cfg["secret"] == json.loads(cfg.read_text())["profile"]["seed"]["secret"]
    assert worker_cfg["seeds"] == [addr]

    seed = procs("run", "seed")
    assert seed.wait_up() == "seed"
    watcher = procs("db", "jobs", "--watch")
    assert watcher.next() == {"added": [], "changed": [], "deleted": [], "view": {}}

    worker = procs("run", "worker")
    wid = worker.wait_up()
    assert wid.startswith("worker/")
    waddr = listener(worker)
    event = watcher.next()
    (port,) = event["added"]
    assert port.startswith(wid + "#") and event["view"] == {port: wid}

    # the port found in the database answers: the anonymous node finds the
    # worker through the seed, which knows where it listens
    assert json.loads(ok("cal", port, "add", "2", "3")) == [5]

    assert ok("nodes").splitlines() == [
        f"seed{' ' * (len(wid) - 4)}  global  {addr}",
        f"{wid}  node    {waddr}",
    ]
    assert json.loads(ok("nodes", "--json")) == {
        "seed": {"global": True, "listeners": [addr]},
        wid: {"global": False, "listeners": [waddr]},
    }
    assert json.loads(ok("db", "jobs")) == {port: wid}
    assert json.loads(ok("db", "'g")) == {"seed": None}
    assert json.loads(ok("db", "--timeout", "2", "'l")) == {"seed": [addr], wid: [waddr]}
    t0 = time.monotonic()
    once = ok("db", "jobs", "--watch", "--timeout", "1")  # an explicit timeout ends a watch
    assert 1 <= time.monotonic() - t0 < 15
    assert [json.loads(line) for line in once.splitlines()] == [
        {"added": [port], "changed": [], "deleted": [], "view": {port: wid}}
    ]

    # the seed is connected to the worker and to the watcher's anonymous
    # node, which listens nowhere and so is a leaf that is not asked
    edges = ok("trace", "seed").splitlines()
    assert f"seed -- {wid}" in edges
    assert [e for e in edges if not e.startswith("seed -- anon/")] == [f"seed -- {wid}"]
    assert any(e.startswith("seed -- anon/") for e in edges)
    dot = ok("trace", "--dot", "seed").splitlines()
    assert dot[0] == "graph aemp {" and dot[-1] == "}"
    assert '  "seed" [shape=box];' in dot and f'  "{wid}";' in dot
    assert f'  "seed" -- "{wid}";' in dot
    assert any(line.startswith('  "anon/') and "[style=dashed]" in line for line in dot)
    assert f"{wid} -- seed" in ok("trace", wid).splitlines()

    # SIGTERM: the worker closes, the seed drops its entries at once
    t0 = time.monotonic()
    rc, log = worker.signal(signal.SIGTERM)
    assert rc == 0, log
    assert watcher.next() == {"added": [], "changed": [], "deleted": [port], "view": {}}
    assert time.monotonic() - t0 < 5  # well within monitor_timeout (30 s)
    assert ok("nodes").splitlines() == [f"seed  global  {addr}"]
    after = ok("trace", "seed").splitlines()  # only the watcher is left
    assert after and all(e.startswith("seed -- anon/") for e in after)

    rc, log = seed.signal(signal.SIGTERM)
    assert rc == 0, log
    rc, rest, err = watcher.signal(signal.SIGTERM)
    assert rc == 0 and rest == "" and err == "", err


# ---------------------------------------------------------------- two seeds


def test_a_stopped_global_node_leaves_the_database_of_the_other(procs: Any, cfg: Path) -> None:
    a1, a2 = (f"127.0.0.1:{free_port()}" for _ in range(2))
    ok("seeds", f"{a1},{a2}", "gensecret",
       "profile", "s1", "nodeid", "s1", "binds", a1, "services", SERVICE,
       "profile", "s2", "nodeid", "s2", "binds", a2,
       "profile", "aemp", "seeds", a2)  # fmt: skip
    s1, s2 = procs("run", "s1"), procs("run", "s2")
    assert (s1.wait_up(), s2.wait_up()) == ("s1", "s2")
    # the watcher's master is s2; s1's service entry reaches it through the mesh
    watcher = procs("db", "jobs", "--watch")
    event = watcher.until(lambda e: e["view"])
    (port,) = event["view"]
    assert port.startswith("s1#") and event["view"] == {port: "s1"}
    assert json.loads(ok("nodes", "--json")) == {
        "s1": {"global": True, "listeners": [a1]},
        "s2": {"global": True, "listeners": [a2]},
    }
    edges = [e for e in ok("trace", "s2").splitlines() if "anon/" not in e]
    assert edges == ["s2 -- s1"]
    dot = ok("trace", "s1", "--dot")
    assert '  "s1" [shape=box];\n  "s2" [shape=box];\n' in dot

    t0 = time.monotonic()
    rc, log = s1.signal(signal.SIGTERM)
    assert rc == 0, log
    assert watcher.next() == {"added": [], "changed": [], "deleted": [port], "view": {}}
    assert time.monotonic() - t0 < 5  # at once, not after monitor_timeout
    assert ok("nodes").splitlines() == [f"s2  global  {a2}"]
    assert json.loads(ok("db", "'g")) == {"s2": None}

    rc, rest, err = watcher.signal(signal.SIGINT)  # SIGINT ends a watch as well
    assert rc == 0 and rest == "" and err == "", err
    rc, log = s2.signal(signal.SIGTERM)
    assert rc == 0, log


# ---------------------------------------------------------------- trouble


def test_trace_names_a_node_that_does_not_answer(procs: Any, cfg: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    ok("secret", "s", "seeds", addr, "profile", "seed", "nodeid", "seed", "binds", addr,
       "profile", "w", "nodeid", "w", "binds", "127.0.0.1:0")  # fmt: skip
    seed = procs("run", "seed")
    seed.wait_up()
    worker = procs("run", "w")
    worker.wait_up()
    assert ok("trace", "seed").splitlines() == ["seed -- w"]

    r = aemp_cmd("trace", "seed", "--max", "1")
    assert r.returncode == 1 and r.stdout.splitlines() == ["seed -- w"]
    assert r.stderr == "aemp: trace: stopped at --max 1 nodes; the graph goes on\n"

    worker.proc.send_signal(signal.SIGSTOP)  # still connected to the seed, but mute
    try:
        r = aemp_cmd("--timeout", "1", "trace", "seed")
        assert r.returncode == 1 and r.stdout.splitlines() == ["seed -- w"]
        assert r.stderr.startswith("aemp: trace: w: no answer within 1 s")
        assert r.stderr.count("\n") == 1
        r = aemp_cmd("--timeout", "1", "trace", "--dot", "seed")
        assert r.returncode == 1 and '  "w" [color=red];' in r.stdout.splitlines()
        r = aemp_cmd("--timeout", "1", "trace", "w")  # the start itself: nothing to print
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.startswith("aemp: trace: w: no answer within 1 s")
    finally:
        worker.proc.send_signal(signal.SIGCONT)
    rc, log = worker.signal(signal.SIGTERM)
    assert rc == 0, log
    r = aemp_cmd("trace", "nobody")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "aemp: trace: nobody: cannot reach it: no known address\n"
    rc, log = seed.signal(signal.SIGTERM)
    assert rc == 0, log


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["nodes"], "nodes"),
        (["db", "x"], "db"),
        (["db", "--watch", "x"], "db"),
        (["trace", "n"], "trace"),
    ],
)
def test_no_global_node_to_ask(run: Run, cfg: Path, args: list[str], what: str) -> None:
    run.ok("secret", "s", "seeds", f"127.0.0.1:{free_port()}")  # nobody listens there
    t0 = time.monotonic()
    rc, out, err = run("--timeout", "0.5", *args)
    assert time.monotonic() - t0 < 10
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(
        f"aemp: {what}: no answer from the global nodes within 0.5 s (no master reachable"
    )
