"""aemp ps, status, ports and stop, and nodes, db and trace through a local node,
against nodes that `aemp run` started: every node and command is a real
`python -m aemp` process, stopped by its own PID, with conftest's AEMP_CONFIG
and XDG_RUNTIME_DIR. Also: what a bad client does to such a node (nothing),
a client of another uid, a SIGKILLed node's socket, two nodes of one ID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import Server, aemp_cmd, env, free_port
from test_cli_inspect import SERVICE, Watcher

from aemp import control


def ok(*args: str, **environ: str) -> str:
    r = run(*args, **environ)
    assert r.returncode == 0 and r.stderr == "", f"aemp {' '.join(args)}: {r.stderr}"
    return r.stdout


def run(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    if not environ:
        return aemp_cmd(*args)
    return subprocess.run(
        [sys.executable, "-m", "aemp", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env(), **environ},
    )


def fails(*args: str, **environ: str) -> str:
    r = run(*args, **environ)
    assert r.returncode == 1 and r.stdout == "", f"aemp {' '.join(args)}: {r.stdout}{r.stderr}"
    (line,) = r.stderr.splitlines()
    return line


@pytest.fixture
def nodes() -> Iterator[Any]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def setup_profiles() -> str:
    addr = f"127.0.0.1:{free_port()}"
    ok("profile", "seed", "nodeid", "seed", "binds", addr, "seeds", addr, "gensecret",
       "profile", "worker", "parent", "seed", "nodeid", "worker/%u", "binds", "127.0.0.1:0",
       "services", SERVICE)  # fmt: skip
    return addr


def test_ps_status_ports_stop_and_the_network_through_a_local_node(
    nodes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    addr = setup_profiles()
    seed = nodes("seed")
    assert seed.wait_up() == "seed"
    worker = nodes("worker")
    wid = worker.wait_up()

    # ps: both, with their pids
    lines = ok("ps").splitlines()
    assert re.fullmatch(r"NODE +PID +UPTIME +LISTENERS", lines[0])
    rows = {r[0]: r for r in (line.split() for line in lines[1:])}
    assert sorted(rows) == sorted(["seed", wid])
    assert rows["seed"][1] == str(seed.proc.pid) and rows["seed"][-1] == addr
    assert rows[wid][1] == str(worker.proc.pid)
    listed = json.loads(ok("ps", "--json"))
    assert {n["nodeid"]: n["pid"] for n in listed} == {
        "seed": seed.proc.pid,
        wid: worker.proc.pid,
    }
    assert all(n["control"] == os.fspath(control.socket_path(n["nodeid"])) for n in listed)

    # status, for people and as JSON
    text = ok("status", "seed").splitlines()
    assert text[0] == f"node        seed (pid {seed.proc.pid}, aemp {listed[0]['version']})"
    assert f"listening   {addr}" in text
    assert "calls       0 pending" in text
    assert any(line.startswith("links       1 up; 1 came up, 0 lost, 0 restarts") for line in text)
    assert any(
        re.match(rf"  {re.escape(wid)}  127\.0\.0\.1:\d+  msgpack  in \d+ B/", ln) for ln in text
    )
    assert any(ln.startswith("database    global node;") for ln in text)
    report = json.loads(ok("status", wid, "--json"))
    assert report["nodeid"] == wid and report["master"] == "seed" and not report["global"]
    assert report["statistics"]["links"]["seed"]["bytes_out"] > 0
    assert report["statistics"]["ports"] == 1  # the adder service's port
    both = ", ".join(sorted(["seed", wid]))
    assert fails("status") == f"aemp: status: 2 nodes run here ({both}): name one"

    # ports
    (port,) = json.loads(ok("db", "jobs", AEMP_NODE="seed"))
    assert ok("ports", wid).splitlines() == [f"{port}  monitors 1  backlog 0  watched by -"]
    assert json.loads(ok("ports", wid, "--json")) == {
        "total": 1,
        "ports": [{"port": port, "monitors": 1, "watchers": [], "backlog": 0}],  # db_reg's
    }
    assert ok("ports", "--max", "0", wid) == "... 1 more (--max N shows more)\n"

    # nodes, db and trace through the seed: no anonymous node joins
    expected_nodes = {
        "seed": {"global": True, "listeners": [addr]},
        wid: {"global": False, "listeners": report["listeners"]},
    }
    assert json.loads(ok("nodes", "--json", AEMP_NODE="seed")) == expected_nodes
    assert json.loads(ok("db", "jobs", AEMP_NODE="seed")) == {port: wid}
    assert ok("trace", "seed", AEMP_NODE="seed").splitlines() == [f"seed -- {wid}"]
    assert ok("trace", wid, AEMP_NODE="seed").splitlines() == [f"{wid} -- seed"]
    once = ok("db", "jobs", "--watch", "--timeout", "1", AEMP_NODE="seed")
    assert [json.loads(x) for x in once.splitlines()] == [
        {"added": [port], "changed": [], "deleted": [], "view": {port: wid}}
    ]
    # two local nodes and no seeds for the anonymous node: the hint says what to do
    ok("profile", "aemp", "seeds", "[]")
    assert fails("nodes").endswith("(2 nodes run here: AEMP_NODE=NODE asks one of them)")

    # a watch through the seed sees the worker stopped through its control socket
    monkeypatch.setenv("AEMP_NODE", "seed")
    watcher = Watcher("db", "jobs", "--watch")
    monkeypatch.delenv("AEMP_NODE")
    try:
        assert watcher.next() == {
            "added": [port],
            "changed": [],
            "deleted": [],
            "view": {port: wid},
        }
        assert ok("stop", wid) == f"stopped {wid} (pid {worker.proc.pid})\n"
        assert worker.proc.wait(timeout=20) == 0
        log = worker.log.rest()
        assert "stop asked on the control socket" in log and f"node {wid} closed" in log
        assert " ERROR " not in log and "Traceback" not in log, log
        assert watcher.next() == {"added": [], "changed": [], "deleted": [port], "view": {}}
        assert not control.socket_path(wid).exists()
        assert [line.split()[0] for line in ok("ps").splitlines()[1:]] == ["seed"]
        # now one node runs here: nodes, db and trace use it without being told
        assert json.loads(ok("nodes", "--json")) == {"seed": {"global": True, "listeners": [addr]}}
        assert json.loads(ok("db", "jobs")) == {}
        assert ok("trace", "seed") == "seed\n"
        assert ok("status").splitlines()[0].startswith("node        seed (pid")
        rc, _, err = watcher.signal(signal.SIGTERM)
        assert rc == 0 and err == "", err
    finally:
        watcher.stop()

    # a node that is not here, and no network to ask it through
    assert fails("status", "elsewhere") == (
        "aemp: status: elsewhere does not run here; over the network: no seeds in profile "
        f"'aemp' or the default section of {os.environ['AEMP_CONFIG']}: the anonymous node "
        "would reach nothing (set them with 'aemp seeds HOST:PORT')"
    )
    assert fails("ports", "elsewhere").startswith("aemp: ports: no node elsewhere runs here")
    assert fails("stop", "elsewhere").startswith("aemp: stop: no node elsewhere runs here")
    assert run("stop").returncode == 2

    rc, log = seed.signal(signal.SIGTERM)
    assert rc == 0, log
    assert ok("ps") == ""
    assert fails("status").startswith("aemp: status: no node runs here with a control socket")


def test_status_of_a_node_elsewhere_goes_over_the_network(nodes: Any) -> None:
    addr = setup_profiles()
    ok("profile", "aemp", "parent", "seed")
    seed = nodes("seed", "control", "false")  # as if on another host: no socket here
    assert seed.wait_up() == "seed"
    assert ok("ps") == ""
    report = json.loads(ok("status", "seed", "--json"))
    assert report["nodeid"] == "seed" and report["pid"] == seed.proc.pid
    assert report["listeners"] == [addr] and "control" not in report
    (anon,) = report["statistics"]["links"]  # the anonymous node that asks
    assert anon.startswith("anon/")
    assert ok("status", "seed").startswith(f"node        seed (pid {seed.proc.pid}")
    r = run("--timeout", "1", "status", "nosuchnode")
    assert r.returncode == 1
    assert r.stderr.startswith("aemp: status: nosuchnode does not run here; over the network:")


def test_a_sigkilled_nodes_socket_is_cleaned_up(nodes: Any) -> None:
    first = nodes("nodeid", "k1", "binds", "127.0.0.1:0", "secret", "s")
    assert first.wait_up() == "k1"
    path = control.socket_path("k1")
    assert path.exists()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=20)
    assert path.exists()  # nobody removed it
    # a new incarnation takes the name over
    second = nodes("nodeid", "k1", "binds", "127.0.0.1:0", "secret", "s")
    assert second.wait_up() == "k1"
    assert json.loads(ok("status", "k1", "--json"))["pid"] == second.proc.pid
    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait(timeout=20)
    assert path.exists()
    # ps removes what it finds dead
    assert ok("ps") == ""
    assert not path.exists() and list(control.runtime_dir().iterdir()) == []
    # and so does a lookup by name
    third = nodes("nodeid", "k1", "binds", "127.0.0.1:0", "secret", "s")
    assert third.wait_up() == "k1"
    third.proc.send_signal(signal.SIGKILL)
    third.proc.wait(timeout=20)
    assert fails("ports", "k1") == "aemp: ports: node k1 does not run here (its socket was stale)"
    assert not path.exists()


def test_a_live_node_keeps_its_socket_from_a_second_of_its_id(nodes: Any) -> None:
    first = nodes("nodeid", "same", "binds", "127.0.0.1:0", "secret", "s")
    assert first.wait_up() == "same"
    second = nodes("nodeid", "same", "binds", "127.0.0.1:0", "secret", "s")
    assert second.wait_up() == "same"
    assert (
        "WARNING aemp.control: node same: no control socket: a live node with this ID"
        in "".join(second.log.seen)
    )
    assert json.loads(ok("status", "same", "--json"))["pid"] == first.proc.pid
    rc, _ = second.signal(signal.SIGTERM)
    assert rc == 0
    assert json.loads(ok("status", "same", "--json"))["pid"] == first.proc.pid  # untouched


def _raw(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send data on a fresh connection; the lines it gets until the node closes or 2 s."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(os.fspath(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
    return [json.loads(line) for line in got.splitlines()]


def test_bad_clients_leave_the_node_unharmed(nodes: Any) -> None:
    node = nodes("nodeid", "sturdy", "binds", "127.0.0.1:0", "secret", "s")
    assert node.wait_up() == "sturdy"
    path = control.socket_path("sturdy")
    replies = _raw(path, b'garbage\n{"cmd": "frobnicate"}\n{"cmd": "hello", "id": 1}\n')
    assert [(r["ok"], r.get("code")) for r in replies] == [
        (False, "bad_request"),
        (False, "unknown_command"),
        (True, None),
    ]
    assert replies[1]["error"].startswith("unknown command 'frobnicate': expected one of db,")
    assert replies[2]["result"]["pid"] == node.proc.pid and replies[2]["id"] == 1
    (too_long,) = _raw(path, b"{" + b" " * (control.MAX_LINE + 10) + b"}\n" + b'{"cmd": "hello"}\n')
    assert too_long["code"] == "line_too_long"
    assert _raw(path, b"\x00\xff" * 100 + b"\n")[0]["code"] == "bad_request"
    # the node serves on: over the socket and over the network
    report = json.loads(ok("status", "sturdy", "--json"))
    assert report["pid"] == node.proc.pid and node.proc.poll() is None
    rc, log = node.signal(signal.SIGTERM)
    assert rc == 0 and " ERROR " not in log, log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command as another uid")
def test_the_command_as_another_user(nodes: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a runtime directory base the other user may pass through (pytest's own is 0700)
    base = Path(tempfile.mkdtemp(prefix="aemp-uid-test-"))
    try:
        os.chmod(base, 0o711)
        monkeypatch.setenv("XDG_RUNTIME_DIR", os.fspath(base))
        node = nodes("nodeid", "private", "binds", "127.0.0.1:0", "secret", "s")
        assert node.wait_up() == "private"
        e = {**env(), "AEMP_CONFIG": os.fspath(base / "none.json")}

        def nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "aemp", *args],
                capture_output=True, text=True, env=e, timeout=30,
                user=65534, group=65534, extra_groups=[],
            )  # fmt: skip

        r = nobody("ps")
        assert r.returncode == 1
        assert r.stderr == (
            f"aemp: ps: cannot read the runtime directory {base}/aemp: Permission denied\n"
        )
        r = nobody("stop", "private")
        assert r.returncode == 1
        assert r.stderr == (
            f"aemp: stop: cannot reach {base}/aemp/private.sock: permission denied "
            "(it is another user's)\n"
        )
        # where the modes would let it in, the node refuses the uid itself
        os.chmod(base / "aemp", 0o755)
        os.chmod(base / "aemp" / "private.sock", 0o666)
        r = nobody("stop", "private")
        assert r.returncode == 1
        assert r.stderr == (
            f"aemp: stop: refused: uid 65534 is not the node's user (uid {os.geteuid()})\n"
        )
        assert node.proc.poll() is None
        assert json.loads(ok("status", "private", "--json"))["pid"] == node.proc.pid
        rc, log = node.signal(signal.SIGTERM)
        assert rc == 0
        assert "refused pid" in log and "of uid 65534 (only uid 0 may)" in log
    finally:
        shutil.rmtree(base)
