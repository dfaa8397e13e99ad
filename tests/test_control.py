"""aemp.control and aemp.metrics on nodes in this process: every command of the
control socket, what it refuses (garbage, an over-long line, an unknown
command, another uid, a directory that is not private), stale and live
sockets, the status report over TCP and the Prometheus endpoint read with a
real HTTP GET.

Each test has its own XDG_RUNTIME_DIR (conftest), so the runtime directory
is $XDG_RUNTIME_DIR/aemp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import until

import aemp
from aemp import control, lowlevel, metrics

SECRET = "control-test"


def rundir() -> Path:
    return control.runtime_dir()


async def raw(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(os.fspath(path), limit=1 << 24)


async def line(reader: asyncio.StreamReader) -> dict[str, Any]:
    got = await asyncio.wait_for(reader.readline(), 5)
    assert got.endswith(b"\n"), got
    reply: dict[str, Any] = json.loads(got)
    return reply


async def pair() -> tuple[aemp.Node, aemp.Node]:
    a = await aemp.Node(nodeid="ca", binds=["127.0.0.1:0"], secret=SECRET).start()
    b = await aemp.Node(
        nodeid="cb", seeds=a.listeners, secret=SECRET, binds=["127.0.0.1:0"]
    ).start()
    await until(lambda: a.node_is_up("cb") and b.master == "ca", what="cb attached to ca")
    return a, b


# ---------------------------------------------------------------- the directory and files


async def test_socket_and_lock_are_private_and_go_with_the_node() -> None:
    async with aemp.Node(nodeid="worker/1") as node:
        server = await control.serve(node)
        assert server.path == control.socket_path("worker/1") == rundir() / "worker%2F1.sock"
        assert stat.S_IMODE(os.stat(rundir()).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(server.path).st_mode)
        assert sorted(p.name for p in rundir().iterdir()) == ["worker%2F1.lock", "worker%2F1.sock"]
        assert await control.serve(node) is server  # once per node
    assert list(rundir().iterdir()) == []  # closing the node removed both


def test_names_are_escaped_and_long_ones_hashed() -> None:
    d = Path("/r")
    assert control.socket_path("a.b-c_d", d) == d / "a.b-c_d.sock"
    assert control.socket_path(".hidden:x", d) == d / "%2Ehidden%3Ax.sock"
    long = control.socket_path("n" * 300, d)
    assert re.fullmatch(r"h-[0-9a-f]{32}\.sock", long.name)
    assert long != control.socket_path("n" * 299, d)
    with pytest.raises(control.ControlError, match="too long for a unix socket address"):
        control.socket_path("x", Path("/" + "d" * 120))


async def test_the_directory_must_be_private(monkeypatch: pytest.MonkeyPatch) -> None:
    d = rundir()
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    async with aemp.Node(nodeid="x") as node:
        with pytest.raises(control.ControlError, match=r"has mode 0755: expected 0700") as e:
            await control.serve(node)
        assert isinstance(e.value, OSError) and isinstance(e.value, aemp.AempError)
    os.chmod(d, 0o700)
    os.chown(d, 65534, 65534)
    async with aemp.Node(nodeid="x") as node:
        with pytest.raises(control.ControlError, match="belongs to uid 65534, not to this user"):
            await control.serve(node)
    d.rmdir()
    d.symlink_to(d.parent)  # a link is refused even to a directory of ours
    async with aemp.Node(nodeid="x") as node:
        with pytest.raises(control.ControlError, match="is not a directory"):
            await control.serve(node)
    d.unlink()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert control.runtime_dir() == Path(f"/tmp/aemp-{os.geteuid()}")


@pytest.mark.allow_error_log  # a service that fails is logged as an error
async def test_configure_fails_on_a_directory_that_is_not_private() -> None:
    rundir().mkdir(mode=0o777)
    os.chmod(rundir(), 0o777)
    with pytest.raises(control.ControlError, match="expected 0700"):
        await aemp.configure("x", norc=True, nodeid="x", control=True)


async def test_a_live_node_is_never_replaced(caplog: pytest.LogCaptureFixture) -> None:
    async with aemp.Node(nodeid="twin") as first, aemp.Node(nodeid="twin") as second:
        s1 = await control.serve(first)
        with caplog.at_level(logging.WARNING, "aemp.control"):
            s2 = await control.serve(second)
        assert s2.path is None and s1.path is not None
        assert "no control socket: a live node with this ID listens on" in caplog.text
        async with await control.connect("twin") as c:
            assert (await c.request("hello"))["nodeid"] == "twin"
        assert control.clean_stale(s1.path) is False  # held: not touched
        assert s1.path.exists()


def _sigkilled(nodeid: str) -> None:
    """A node in another process that opens its control socket and is SIGKILLed."""
    code = f"""
import asyncio, os, signal, aemp
from aemp import control
async def main():
    node = await aemp.Node(nodeid={nodeid!r}).start()
    await control.serve(node)
    os.kill(os.getpid(), signal.SIGKILL)
aemp.run(main())
"""
    r = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert r.returncode == -9, r.stderr


async def test_a_dead_nodes_socket_is_cleaned_up_and_taken_over() -> None:
    _sigkilled("dead")
    path = control.socket_path("dead")
    assert path.exists()  # SIGKILL left it behind
    assert await control.local_nodes() == []  # ps finds it stale and removes it
    assert not path.exists() and not path.with_suffix(".lock").exists()

    _sigkilled("dead")
    with pytest.raises(control.ControlError, match="does not run here") as e:
        await control.connect("dead")
    assert e.value.code == "no_node" and not path.exists()

    _sigkilled("dead")
    async with aemp.Node(nodeid="dead") as node:  # a new incarnation takes the name over
        assert (await control.serve(node)).path == path
        async with await control.connect("dead") as c:
            assert (await c.request("hello"))["pid"] == os.getpid()


# ---------------------------------------------------------------- the commands


async def test_every_command() -> None:
    a, b = await pair()
    try:
        await control.serve(a)
        await metrics.serve(a)
        async with await control.connect("ca") as c:
            hello = await c.request("hello")
            assert hello == {
                "protocol": control.PROTOCOL, "nodeid": "ca", "pid": os.getpid(),
                "version": aemp.__version__, "started": a.started, "listeners": a.listeners,
            }  # fmt: skip
            assert set(await c.request("help")) == {
                "hello", "help", "status", "ports", "stop", "nodes", "db", "up_nodes", "watch",
            }  # fmt: skip

            p = a.port(lambda *m: None)
            b.mon(p, lambda *r: None)
            a.db_set("jobs", "j1", {"n": 1, "raw": b"\xffab"})
            await until(lambda: lowlevel.port_info(a, p)["watchers"] == ["cb"], what="watcher")

            st = await c.request("status")
            assert st["nodeid"] == "ca" and st["global"] is True and st["master"] == "ca"
            assert st["control"] == os.fspath(control.socket_path("ca"))
            assert st["metrics"] == metrics.address(a)
            s = st["statistics"]
            assert s["ports"] == 1 and s["calls"] == 0 and s["links_up"] == 1
            link = s["links"]["cb"]
            assert link["bytes_in"] > 0 and link["bytes_out"] > 0
            assert link["packets_in"] > 0 and link["packets_out"] > 0

            ports = await c.request("ports")
            assert ports == {
                "total": 1, "ports": [{"port": p, "monitors": 0, "watchers": ["cb"], "backlog": 0}]
            }  # fmt: skip
            assert await c.request("ports", limit=0) == {"total": 1, "ports": []}

            assert await c.request("nodes") == {
                "ca": {"global": True, "listeners": a.listeners},
                "cb": {"global": False, "listeners": b.listeners},
            }
            assert await c.request("db", family="jobs") == {"j1": {"n": 1, "raw": "\\xffab"}}
            assert await c.request("db", family="jobs", what="keys") == ["j1"]
            assert await c.request("up_nodes") == ["cb"]
            assert await c.request("up_nodes", node="cb") == ["ca"]

        async with await control.connect("ca") as w:
            events = w.watch("jobs")
            first = await anext(events)
            assert first["added"] == ["j1"] and first["view"]["j1"]["n"] == 1
            b.db_set("jobs", "j2", 2)
            second = await anext(events)
            assert second == {
                "added": ["j2"], "changed": [], "deleted": [],
                "view": {"j1": {"n": 1, "raw": "\\xffab"}, "j2": 2},
            }  # fmt: skip
        await until(lambda: lowlevel.statistics(a)["db"]["monitors"] == 0, what="watch ended")

        async with await control.connect("ca") as c:
            assert await c.request("stop") == {"stopping": "ca"}
        await until(lambda: a.closed, what="node closed by stop")
        assert not control.socket_path("ca").exists()
    finally:
        await b.close()
        await a.close()


async def test_command_errors_come_back_as_the_nodes_exceptions() -> None:
    a, b = await pair()
    try:
        await control.serve(b)
        async with await control.connect("cb") as c:
            with pytest.raises(aemp.PortDead) as dead:
                await c.request("up_nodes", node="nosuchnode", timeout=2)
            assert dead.value.reason[0] == "transport_error"
            with pytest.raises(control.ControlError, match="InvalidFamily") as e:
                await c.request("db", family="no such family")
            assert e.value.code == "failed"
            for args, text in [
                ({"timeout": 0}, "timeout must be a number of seconds above 0"),
                ({"timeout": "5"}, "timeout must be a number"),
                ({"family": 3}, "family must be a non-empty string"),
                ({"what": "all"}, "what must be family, keys, values or families"),
            ]:
                with pytest.raises(control.ControlError, match=text) as e:
                    await c.request("db", **{"family": "jobs", **args})
                assert e.value.code == "bad_argument"
            with pytest.raises(control.ControlError, match="limit must be an int") as e:
                await c.request("ports", limit=-1)
            assert (await c.request("hello"))["nodeid"] == "cb"  # the connection goes on
    finally:
        await b.close()
        await a.close()


async def test_garbage_long_lines_and_unknown_commands_harm_nothing() -> None:
    async with aemp.Node(nodeid="g") as node:
        server = await control.serve(node)
        assert server.path is not None
        reader, writer = await raw(server.path)
        for bad, code, text in [
            (b"garbage\n", "bad_request", "not a JSON line"),
            (b"\xff\xfe{}\n", "bad_request", "not a JSON line"),
            (b"[1, 2]\n", "bad_request", 'expected a JSON object with a "cmd" string'),
            (b'{"cmd": 7}\n', "bad_request", 'expected a JSON object with a "cmd" string'),
            (b"[" * 60000 + b"\n", "bad_request", "not a JSON line"),
            (b'{"cmd": "launch", "id": 3}\n', "unknown_command", "unknown command 'launch': "
             "expected one of db, hello, help, nodes, ports, status, stop, up_nodes, watch"),
        ]:  # fmt: skip
            writer.write(bad)
            reply = await line(reader)
            assert reply["ok"] is False and reply["code"] == code, reply
            assert text in reply["error"]
        writer.write(b'\n{"cmd": "hello", "id": [1]}\n')  # blank lines are skipped
        assert (await line(reader)) == {"ok": True, "result": (await _hello(node)), "id": [1]}

        writer.write(b'{"cmd": "hello", "pad": "' + b"x" * control.MAX_LINE + b'"}\n')
        reply = await line(reader)
        assert reply["code"] == "line_too_long" and str(control.MAX_LINE) in reply["error"]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
        writer.close()

        # the node and its socket serve on
        async with await control.connect("g") as c:
            assert (await c.request("hello"))["nodeid"] == "g"
        assert server.bad_lines == 7 and not node.closed


async def _hello(node: aemp.Node) -> dict[str, Any]:
    return {
        "protocol": control.PROTOCOL,
        "nodeid": node.id,
        "pid": os.getpid(),
        "version": aemp.__version__,
        "started": node.started,
        "listeners": node.listeners,
    }


_NOBODY_CLIENT = """
import contextlib, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit(0)
with contextlib.suppress(BrokenPipeError, ConnectionResetError):
    s.sendall(b'{"cmd": "status"}\\n')  # the node may have answered and closed already
got = b""
while not got.endswith(b"\\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print("connected")
print(got.decode().strip())
"""


def _as_nobody(path: Path) -> tuple[str, str]:
    """Connect to `path` as uid 65534 in a child process: (how it went, the first line)."""
    r = subprocess.run(
        [sys.executable, "-c", _NOBODY_CLIENT, os.fspath(path)],
        user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    how, _, rest = r.stdout.partition("\n")
    return how, rest.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
async def test_another_uid_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # a runtime directory the other user can pass through (pytest's own is 0700)
    base = Path(tempfile.mkdtemp(prefix="aemp-uid-test-"))
    os.chmod(base, 0o711)
    monkeypatch.setenv("XDG_RUNTIME_DIR", os.fspath(base))
    try:
        await _refused()
    finally:
        shutil.rmtree(base)


async def _refused() -> None:
    async with aemp.Node(nodeid="mine") as node:
        server = await control.serve(node)
        assert server.path is not None
        loop = asyncio.get_running_loop()
        # the directory's mode keeps the other user out ...
        how, _ = await loop.run_in_executor(None, _as_nobody, server.path)
        assert how == "EACCES"
        # ... and where it would not, the peer's uid does
        os.chmod(server.path.parent, 0o755)
        os.chmod(server.path, 0o666)
        how, reply = await loop.run_in_executor(None, _as_nobody, server.path)
        assert how == "connected"
        assert json.loads(reply) == {
            "ok": False, "code": "refused",
            "error": f"refused: uid 65534 is not the node's user (uid {os.geteuid()})",
        }  # fmt: skip
        assert server.refused == 1
        async with await control.connect("mine") as c:  # the owner is served as before
            assert (await c.request("status"))["nodeid"] == "mine"


async def test_too_many_connections_are_told_busy() -> None:
    async with aemp.Node(nodeid="busy") as node:
        server = await control.serve(node)
        assert server.path is not None
        held = [await control.connect("busy") for _ in range(32)]
        for c in held:
            await c.request("hello")  # each admitted
        reader, writer = await raw(server.path)
        assert (await line(reader))["code"] == "busy"
        writer.close()
        await held[0].aclose()
        for _ in range(100):  # once the server saw that one go, a new one is served
            async with await control.connect("busy") as c:
                try:
                    assert (await c.request("hello"))["nodeid"] == "busy"
                    break
                except control.ControlError as e:
                    assert e.code == "busy"
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("still busy after a connection closed")
        for c in held[1:]:
            await c.aclose()
        assert not node.closed


# ---------------------------------------------------------------- statistics over the network


async def test_status_node_request_over_tcp() -> None:
    a, b = await pair()
    try:
        (report,) = await b.cal("ca", "status", timeout=5)
        assert report["nodeid"] == "ca" and report["master"] == "ca" and report["global"]
        assert report["listeners"] == a.listeners and report["pid"] == os.getpid()
        assert report["statistics"]["links"]["cb"]["bytes_in"] > 0
        assert report["statistics"]["remotes"] == {"up": 1}
        assert isinstance(report["statistics"]["addresses"], int)
        assert report["statistics"]["links_omitted"] == 0
        assert json.loads(json.dumps(report)) == report  # plain data
        assert lowlevel.status(a)["nodeid"] == "ca"
    finally:
        await b.close()
        await a.close()


async def test_statistics_count_links_and_restarts() -> None:
    a = await aemp.Node(nodeid="ra", binds=["127.0.0.1:0"], secret=SECRET).start()
    try:
        for round_ in range(1, 3):
            async with aemp.Node(nodeid="rb", seeds=a.listeners, secret=SECRET) as b:
                await until(lambda: a.node_is_up("rb") and b.node_is_up("ra"), what="rb up")
            await until(lambda: not a.node_is_up("rb"), what="rb gone")
            s = lowlevel.statistics(a)
            assert (s["links_up"], s["links_lost"], s["restarts"]) == (round_, round_, round_ - 1)
        assert s["uptime"] > 0
    finally:
        await a.close()


# ---------------------------------------------------------------- metrics


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


_SAMPLE = re.compile(r'([a-z_]+)(\{(?:[a-z]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)\Z')


def parse(text: str) -> dict[str, Any]:
    """The exposition text as {name: (type, help, {labels: value})}; asserts its shape."""
    families: dict[str, Any] = {}
    current = None
    for ln in text.splitlines():
        if ln.startswith("# HELP "):
            name, _, help_ = ln[7:].partition(" ")
            assert name not in families, f"{name} twice"
            families[name] = [None, help_, {}]
            current = name
        elif ln.startswith("# TYPE "):
            name, _, kind = ln[7:].partition(" ")
            assert name == current and kind in ("gauge", "counter"), ln
            families[name][0] = kind
        else:
            m = _SAMPLE.match(ln)
            assert m, f"not a sample line: {ln!r}"
            assert m.group(1) == current, ln
            families[current][2][m.group(2) or ""] = float(m.group(3))
    return families


async def test_metrics_over_http() -> None:
    a, b = await pair()
    try:
        server = await metrics.serve(a, "127.0.0.1:0")
        assert server.address is not None and server.address.startswith("127.0.0.1:")
        assert await metrics.serve(a) is server
        a.port(lambda *m: None)
        loop = asyncio.get_running_loop()
        url = f"http://{server.address}"
        status, headers, body = await loop.run_in_executor(None, _get, url + "/metrics")
        assert status == 200 and headers["Content-Type"] == metrics.CONTENT_TYPE
        fams = parse(body)
        assert fams["aemp_info"][2] == {'{nodeid="ca",version="' + aemp.__version__ + '"}': 1}
        assert fams["aemp_ports"] == ["gauge", "Live local ports.", {"": 1.0}]
        assert fams["aemp_db_global"][2] == {"": 1.0}
        assert fams["aemp_links"][2] == {"": 1.0}
        got = fams["aemp_link_bytes_total"]
        assert got[0] == "counter"
        assert set(got[2]) == {'{peer="cb",direction="in"}', '{peer="cb",direction="out"}'}
        assert all(v > 0 for v in got[2].values())
        assert fams["aemp_link_packets_total"][2]['{peer="cb",direction="in"}'] >= 1
        assert fams["aemp_links_up_total"] == ["counter", fams["aemp_links_up_total"][1], {"": 1}]
        assert fams["aemp_remotes"][2] == {'{state="up"}': 1.0}
        assert set(parse(metrics.exposition(a))) == set(fams)

        status, _, body = await loop.run_in_executor(None, _get, url + "/", "HEAD")
        assert status == 200 and body == ""
        assert (await loop.run_in_executor(None, _get, url + "/nothing"))[0] == 404
        assert (await loop.run_in_executor(None, _get, url + "/metrics", "POST"))[0] == 405
        for bad in [b"garbage\r\n\r\n", b"GET /metrics\r\n\r\n",
                    b"GET /metrics HTTP/1.0\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n"]:  # fmt: skip
            host, port = server.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(bad)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), answer[:60]
            writer.close()
        assert server.requests == 2 and server.bad_requests == 5
        assert (await loop.run_in_executor(None, _get, url + "/metrics"))[0] == 200
    finally:
        await b.close()
        await a.close()
    assert metrics.address(a) is None


def test_every_character_of_a_node_id_is_a_valid_label() -> None:
    async def main() -> str:
        async with aemp.Node(nodeid="host.example:4040/w_1-x") as node:
            return metrics.exposition(node)

    fams = parse(aemp.run(main()))
    assert list(fams["aemp_info"][2]) == [
        f'{{nodeid="host.example:4040/w_1-x",version="{aemp.__version__}"}}'
    ]


async def test_the_keys_start_both_through_configure() -> None:
    node = await aemp.configure("x", norc=True, nodeid="conf", control=True, metrics="127.0.0.1:0")
    try:
        async with await control.connect("conf") as c:
            st = await c.request("status")
        assert st["metrics"] == metrics.address(node) is not None
        status, _, body = await asyncio.get_running_loop().run_in_executor(
            None, _get, f"http://{st['metrics']}/metrics"
        )
        assert status == 200 and "aemp_ports 0" in body
    finally:
        await node.close()
    assert not control.socket_path("conf").exists()


def test_bad_values_of_the_keys() -> None:
    with pytest.raises(aemp.ConfigError, match="'metrics' 'nowhere:port' is not valid"):
        aemp.run(_node(metrics="nowhere:port"))
    with pytest.raises(aemp.ConfigError, match="'metrics' must be an address"):
        aemp.run(_node(metrics=9100))
    with pytest.raises(aemp.ConfigError, match="'control' must be true or false"):
        aemp.run(_node(control="yes"))


async def _node(**keys: Any) -> None:
    async with aemp.Node(**keys):
        pass


async def test_a_watcher_that_does_not_read_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import aemp.control._server as server_module  # its bound, made small for the test

    monkeypatch.setattr(server_module, "MAX_EVENTS", 5)
    async with aemp.Node(nodeid="w") as node:
        server = await control.serve(node)
        assert server.path is not None
        reader, writer = await raw(server.path)
        writer.write(b'{"cmd": "watch", "family": "big"}\n')
        assert (await line(reader))["result"] == {"watching": "big"}
        blob = "x" * 200_000
        for i in range(30):  # each event holds the whole family: far more than the buffers
            node.db_set("big", f"k{i:02}", blob)
            await asyncio.sleep(0.005)
        got = []
        while True:
            chunk = await asyncio.wait_for(reader.readline(), 10)
            if not chunk:
                break
            got.append(json.loads(chunk))
        assert got[-1]["code"] == "too_slow" and "more than 5 events unread" in got[-1]["error"]
        assert all("event" in g for g in got[:-1]) and len(got) < 31
        writer.close()
        await until(lambda: lowlevel.statistics(node)["db"]["monitors"] == 0, what="cut off")
        async with await control.connect("w") as c:  # the node serves on
            assert await c.request("db", family="big", what="keys") == [
                f"k{i:02}" for i in range(30)
            ]
