"""What a new user tripped over (issue 17): configuration origins, joining,
link logs, `aemp run`'s import path, types, the command line, packaging."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, until
from test_tutorial import net  # noqa: F401 - the tutorial's network fixture

import aemp

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BIN = ROOT / "bin" / "aemp"


def wait_file(path: Path, proc: subprocess.Popen[str], limit: float = 20) -> str:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=20)
            raise AssertionError(f"{path} did not appear: {err}")
        time.sleep(0.02)
    return path.read_text()


# ---------------------------------------------------------------- aemp run's import path

SERVICE = """\
from pathlib import Path
import aemp

def start(path):
    Path(path).write_text(aemp.NODE())
"""


@pytest.mark.parametrize("where", ["cwd", "--path"])
def test_run_imports_from_the_current_directory_and_path(tmp_path: Path, where: str) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "first_steps_service.py").write_text(SERVICE)
    out = tmp_path / "started"
    services = json.dumps([["first_steps_service:start", str(out)]])
    args = ["run", "norc", "true", "nodeid", "fs1", "secret", "s", "services", services]
    cwd = app
    if where == "--path":
        args += ["--path", str(app)]  # an option after the arguments
        cwd = tmp_path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)  # aemp itself; not the service's directory
    # bin/aemp, not `python -m aemp`: -m would put the directory on the path itself
    proc = subprocess.Popen(
        [sys.executable, str(BIN), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_file(out, proc) == "fs1"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


# ---------------------------------------------------------------- where each value came from


def write_config(data: dict[str, Any]) -> Path:
    path = Path(os.environ["AEMP_CONFIG"])
    path.write_text(json.dumps(data))
    return path


async def test_configure_logs_what_the_file_overrode(caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(
        {"secret": "file-secret", "profile": {"myapp": {"monitor_timeout": 3, "nodeid": "fs2"}}}
    )
    caplog.set_level(logging.WARNING, "aemp")
    node = await aemp.configure("myapp", secret="code-secret", monitor_timeout=60, nodeid="fs2")
    try:
        assert node.config.monitor_timeout == 3.0  # AnyEvent::MP's precedence stays
        lines = [r.getMessage() for r in caplog.records if r.name == "aemp.config"]
        assert len(lines) == 1, lines
        line = lines[0]
        assert f"the configuration file {path} (from $AEMP_CONFIG) overrode" in line
        assert "monitor_timeout 60 -> 3 from its profile 'myapp'" in line
        assert "secret a secret -> a secret from its default section" in line
        assert "nodeid" not in line  # the same value is no override
        assert "file-secret" not in line and "code-secret" not in line
    finally:
        await node.close()
    caplog.clear()
    node = await aemp.configure("myapp", force=True, monitor_timeout=60, nodeid="fs2")
    try:
        assert node.config.monitor_timeout == 60.0
        assert not [r for r in caplog.records if r.name == "aemp.config"]
    finally:
        await node.close()


def test_showconfig_names_each_values_origin(tmp_path: Path) -> None:
    write_config(
        {
            "secret": "s",
            "profile": {
                "base": {"seeds": ["127.0.0.1:4040"], "monitor_timeout": 3},
                "w": {"parent": "base", "binds": ["127.0.0.1:4041"]},
            },
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "aemp", "showconfig", "w", "monitor_timeout", "60",
         "connect_interval", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["monitor_timeout"] == 3
    assert shown["file"] == f"{os.environ['AEMP_CONFIG']} (from $AEMP_CONFIG)"
    origin = shown["origin"]
    assert origin["secret"] == "default section"
    assert origin["seeds"] == "profile 'base'"
    assert origin["monitor_timeout"] == "profile 'base'"
    assert origin["binds"] == "profile 'w'"
    assert origin["connect_interval"] == "program"
    assert origin["max_packet"] == "default"
    assert origin["nodeid"] == "default (the profile name)"
    assert set(origin) == set(shown) - {"profile", "file", "origin", "overridden"}
    assert shown["overridden"] == {"monitor_timeout": 60}


# ---------------------------------------------------------------- waiting until joined


async def test_wait_joined_returns_the_master() -> None:
    async with aemp.Node(nodeid="fs-seed", binds=["127.0.0.1:0"], secret="s") as seed:
        assert await seed.wait_joined(timeout=5) == "fs-seed"  # no seeds: its own master
        async with aemp.Node(nodeid="fs-c", seeds=seed.listeners, secret="s") as node:
            assert await node.wait_joined(timeout=5) == "fs-seed"
            assert node.master == "fs-seed"
            assert await node.wait_joined(timeout=5) == "fs-seed"  # at once, now


async def test_wait_joined_names_a_secret_mismatch_at_once() -> None:
    async with aemp.Node(nodeid="fs-seed", binds=["127.0.0.1:0"], secret="right") as seed:
        addr = seed.listeners[0]
        async with aemp.Node(nodeid="fs-c", seeds=[addr], secret="wrong") as node:
            t0 = time.monotonic()
            with pytest.raises(aemp.JoinRefused) as info:
                await node.wait_joined(timeout=20)
            assert time.monotonic() - t0 < 10  # not the whole timeout
    e = info.value
    assert isinstance(e, aemp.JoinError) and isinstance(e, ConnectionError)
    assert e.nodeid == "fs-c" and list(e.problems) == [addr]
    assert "shared secret mismatch" in e.problems[addr]
    assert f"every seed refused its authentication ({addr}: authentication failure" in str(e)


async def test_wait_joined_times_out_naming_the_addresses_tried() -> None:
    down = f"127.0.0.1:{free_port()}"
    async with aemp.Node(nodeid="fs-c", seeds=[down], secret="s") as node:
        with pytest.raises(aemp.JoinTimeout) as info:
            await node.wait_joined(timeout=0.5)
    e = info.value
    assert isinstance(e, TimeoutError) and e.timeout == 0.5
    assert list(e.problems) == [down] and "refused" in e.problems[down].lower()
    assert str(e).startswith(f"node 'fs-c' did not join within 0.5 s: no seed served it ({down}: ")


async def test_wait_joined_module_level_bad_timeout_and_close() -> None:
    port = free_port()
    node = await aemp.configure(norc=True, nodeid="fs-c", seeds=[f"127.0.0.1:{port}"], secret="s")
    try:
        with pytest.raises(aemp.OutOfRange, match="wait_joined: timeout must be a positive"):
            await aemp.wait_joined(timeout=0)
        waiting = asyncio.ensure_future(aemp.wait_joined(timeout=20))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        async with aemp.Node(nodeid="fs-seed", binds=[f"127.0.0.1:{port}"], secret="s"):
            assert await asyncio.wait_for(waiting, 10) == "fs-seed"  # the seed came up late
        waiting = asyncio.ensure_future(node.wait_joined(timeout=None))
        await asyncio.sleep(0.05)
        await node.close()
        with pytest.raises(aemp.NodeClosed):
            await asyncio.wait_for(waiting, 5)
    finally:
        await node.close()


# ---------------------------------------------------------------- links in the log


def info_lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and needle in r.getMessage()
    ]


async def test_links_up_and_down_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "aemp")
    keys: dict[str, Any] = {"secret": "s", "monitor_timeout": 2, "connect_interval": 0.3}
    async with aemp.Node(nodeid="fs-seed", binds=["127.0.0.1:0"], **keys) as seed:
        addr = seed.listeners[0]
        async with aemp.Node(nodeid="fs-c", seeds=[addr], **keys) as node:
            await node.wait_joined(timeout=5)
            assert info_lines(caplog, f"node fs-c: link to fs-seed up (dialled, {addr})")
            await until(lambda: info_lines(caplog, "node fs-seed: link to fs-c up (accepted, "))
            w = aemp.Node(nodeid="fs-w", binds=["127.0.0.1:0"], seeds=[addr], **keys)
            try:
                await w.start()
                await w.wait_joined(timeout=5)  # so that the seed knows where it listens
                port = w.port(lambda *m: None)
                await node.cal("fs-w", "time", timeout=5)  # a link between the two
                waddr = w.listeners[0]
                assert info_lines(caplog, f"node fs-c: link to fs-w up (dialled, {waddr})")
            finally:
                await w.close()
            await until(lambda: info_lines(caplog, f"node fs-c: link to fs-w down ({waddr}): "))
            assert not info_lines(caplog, "node fs-w: link to")[2:]  # its own close: silent
            # a node that stays unreachable: one line, however often it is asked for
            for _ in range(20):
                node.mon(port, lambda *reason: None)
                await asyncio.sleep(0.05)
            await until(lambda: info_lines(caplog, "node fs-c: cannot reach node fs-w: "))
            for _ in range(20):
                node.mon(port, lambda *reason: None)
                await asyncio.sleep(0.05)
            assert len(info_lines(caplog, "cannot reach node fs-w")) == 1


async def test_an_unreachable_seed_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "aemp")
    down = f"127.0.0.1:{free_port()}"
    async with aemp.Node(nodeid="fs-c", seeds=[down], secret="s", monitor_timeout=0.5) as node:
        with pytest.raises(aemp.JoinTimeout):
            await node.wait_joined(timeout=3)  # the seed loop retries every 0.5 s meanwhile
    told = info_lines(caplog, f"node fs-c: seed {down}: ")
    assert len(told) == 1, told
    again = [r for r in caplog.records if f"seed {down}:" in r.getMessage()]
    assert len(again) > 2 and all(r.levelno == logging.DEBUG for r in again[1:])


# ---------------------------------------------------------------- the command line


def test_the_command_line_a_new_user_tried(tmp_path: Path) -> None:
    from test_cli import Server, aemp_cmd

    addr = f"127.0.0.1:{free_port()}"
    portfile = tmp_path / "echo.port"
    services = json.dumps([["cli_services:echo_service", str(portfile)], "spawn_targets"])
    r = aemp_cmd("gensecret", "seeds", addr, "profile", "seed", "nodeid", "seed",
                 "binds", addr, "services", services)  # fmt: skip
    assert r.returncode == 0, r.stderr

    r = aemp_cmd()  # no command: help, on stderr, and the status of a mistake
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("usage: aemp")

    server = Server("seed")
    try:
        server.wait_up()
        echo = portfile.read_text()
        # options after the arguments, as for db --watch
        t0 = time.monotonic()
        r = aemp_cmd("mon", echo, "--timeout", "1")
        assert r.returncode == 1 and r.stderr == f"aemp: mon: {echo} did not die within 1 s\n"
        assert time.monotonic() - t0 < 15
        # a node request the node does not know: answered at once, not the timeout
        t0 = time.monotonic()
        r = aemp_cmd("cal", "seed", "nosuchrequest", "--timeout", "20")
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("aemp: cal: node seed has no node request 'nosuchrequest' (")
        assert "time" in r.stderr and time.monotonic() - t0 < 10
        # snd and kil to a port that does not exist
        for cmd in ("snd", "kil"):
            r = aemp_cmd(cmd, "seed#nosuchport", *(["hello"] if cmd == "snd" else []))
            assert r.returncode == 1
            assert f"aemp: {cmd}: seed#nosuchport does not exist (node seed has no " in r.stderr
        # spawn: a port on the seed, then killed with a reason
        r = aemp_cmd("spawn", "seed", "spawn_targets:echo_init", "fs")
        assert r.returncode == 0, r.stderr
        spawned = r.stdout.strip()
        assert spawned.startswith("seed#")
        r = aemp_cmd("spawn", "seed", "spawn_targets:unmarked", "x")
        assert r.returncode == 1 and "SpawnRefused" in r.stderr and "not marked" in r.stderr
        r = aemp_cmd("kil", spawned, "stopped", "by", "hand", "--timeout", "5")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        r = aemp_cmd("mon", spawned)
        assert r.returncode == 0 and json.loads(r.stdout)[0] == "no_such_port"
        r = aemp_cmd("kil", echo)  # a normal exit
        assert r.returncode == 0, r.stderr
        # the families the database holds
        r = aemp_cmd("db")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"'g": 1, "'l": 1}
        assert aemp_cmd("snd", "seed", "devnull", "x").returncode == 0  # the node port: no word
    finally:
        server.stop()


async def test_an_unknown_node_request_is_answered_only_to_the_asker() -> None:
    keys: dict[str, Any] = {"secret": "s"}
    async with (
        aemp.Node(nodeid="fs-a", binds=["127.0.0.1:0"], **keys) as a,
        aemp.Node(nodeid="fs-b", seeds=a.listeners, **keys) as b,
    ):
        reply = await b.cal("fs-a", "nosuchrequest", 1, timeout=5)
        assert reply[0] == "error" and "has no node request 'nosuchrequest'" in reply[1]
        # a "reply port" of a third node gets nothing: no answers on another's behalf
        got: list[Any] = []
        third = a.port(lambda *m: got.append(m))
        b.snd("fs-a", "nosuchrequest", third)
        await b.cal("fs-a", "time", timeout=5)
        await asyncio.sleep(0.05)
        assert got == []


# ---------------------------------------------------------------- types


def test_examples_and_the_api_types_pass_mypy_strict() -> None:
    """What dev.py test (and so CI) runs: every eg/ program, and the API's
    promises in tests/types_probe.py, under mypy --strict."""
    sys.path.insert(0, str(ROOT))
    try:
        import dev
    finally:
        sys.path.remove(str(ROOT))
    step = ["-m", "mypy", "--strict", "eg", "tests/types_probe.py"]
    assert step in dev.CHECKS
    r = subprocess.run(
        [sys.executable, *step], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_self_port() -> None:
    with pytest.raises(aemp.NoCurrentPort, match="outside any port's context"):
        aemp.self_port()

    async def main() -> str:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        p = aemp.port(lambda *msg: got.set_result(aemp.self_port()))
        aemp.snd(p, "x")
        return p if await asyncio.wait_for(got, 5) == p else "?"

    assert aemp.run(main()).count("#") == 1


# ---------------------------------------------------------------- docs that disagreed


def test_docs_cite_no_document_outside_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        assert "DESIGN" not in page.read_text(), f"{page.name} cites DESIGN, not in the repository"


def test_ports_page_names_real_parameters() -> None:
    """A `name(param=...)` in docs/ports.md's table uses the function's own parameter names."""
    import inspect
    import re

    text = (ROOT / "docs" / "ports.md").read_text()
    checked = 0
    for name, params in re.findall(r"\| `(\w+)\(([^`]*)\)`", text):
        fn = getattr(aemp, name, None)
        if fn is None:
            continue
        real = inspect.signature(fn).parameters
        named = {n for n, p in real.items() if p.kind is not p.VAR_KEYWORD}
        for given, value in re.findall(r"(\w+)=(\w+)", params):
            if value == "None" or given in named:  # a default given: the real name
                assert given in named, f"ports.md: {name}() has no parameter {given!r}"
                checked += 1
    assert checked >= 2


async def test_can_eval_answers_false_as_the_protocol_page_says() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert "`can eval` answers `[false]`" in text
    async with (
        aemp.Node(nodeid="fs-a", binds=["127.0.0.1:0"], secret="s") as a,
        aemp.Node(nodeid="fs-b", seeds=a.listeners, secret="s") as b,
    ):
        assert await b.cal("fs-a", "can", "eval", timeout=5) == (False,)
        assert await b.cal("fs-a", "can", "time", timeout=5) == (True,)


def chat_transcripts() -> tuple[list[str], list[str], list[str]]:
    """docs/intro.md part 5: the server's two runs and Alice's output (typed lines left out)."""
    text = (ROOT / "docs" / "intro.md").read_text()
    part = text[text.index("Ctrl-C (or `kill -9` it) and start it again:") :]
    server_block, alice_block = (b.split("\n```", 1)[0] for b in part.split("```console\n")[1:3])
    first, second = server_block.split("\n^C\n")
    runs = [[x for x in run.splitlines() if not x.startswith("$ ")] for run in (first, second)]
    typed = {"hello bob", "anybody there?"}
    alice = [x for x in alice_block.splitlines()[1:] if x not in typed]
    return runs[0], runs[1], alice


READY = re.compile(r"chat server: ready at chat_server/\w+#\w+")


async def test_the_chat_transcripts_are_a_real_run(net: Any) -> None:  # noqa: F811
    doc_first, doc_second, doc_alice = chat_transcripts()
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
    await server.expect(r"^<alice> hello bob$")
    server.signal(signal.SIGINT)
    await server.wait()
    for client in (alice, bob):
        await client.expect(r"^\* lost the server \(transport_error\), waiting for it")
    await alice.write("anybody there?\n")
    await alice.expect(r"^\* not connected, line dropped$")
    again = await net.example("chat_server.py")
    await again.expect(r"^chat server: ready at ")
    for client in (alice, bob):
        await client.expect(r"^\* joined the chat \([12] here\)$")
    await bob.write("welcome back\n")
    await alice.expect(r"^<bob> welcome back$")
    await again.expect(r"^<bob> welcome back$")

    assert READY.fullmatch(doc_first[0]) and READY.fullmatch(server.out[0])
    assert server.out[1:] == doc_first[1:]
    assert READY.fullmatch(doc_second[0]) and READY.fullmatch(again.out[0])
    assert (
        sorted(again.out[1:3]) == sorted(doc_second[1:3]) == ["<*> alice joined", "<*> bob joined"]
    )
    assert again.out[3:] == doc_second[3:]
    # the room's greeting and the cal's answer are sent together, and either
    # may be printed first (the doc's order is the usual one); after the
    # restart, who joins first varies too
    assert sorted(alice.out[:2]) == sorted(doc_alice[:2])
    assert alice.out[2:6] == doc_alice[2:6]
    rejoined = [
        ["* joined the chat (2 here)", "<*> alice joined"],
        ["* joined the chat (1 here)", "<*> alice joined", "<*> bob joined"],
    ]
    assert sorted(alice.out[6:-1]) in rejoined and sorted(doc_alice[6:-1]) in rejoined
    assert alice.out[-1] == doc_alice[-1] == "<bob> welcome back"


async def test_a_lost_chat_server_is_told_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Part 5's Ctrl-Z: while the database still lists the lost server, the
    client's attempts to join it fail; it says it lost the server once."""
    sys.path.insert(0, str(ROOT / "eg"))
    try:
        import chat_client
    finally:
        sys.path.remove(str(ROOT / "eg"))
    node = await aemp.configure(norc=True, nodeid="fs-chat")  # the examples' node
    try:

        def join(client: str, nick: str, reply: str) -> None:
            node.snd(reply, "welcome", 1)

        server = node.port(join=join)
        client = chat_client.Client("alice")
        client.servers = {server: None}  # what the database lists, and keeps listing
        await client.join(server)
        node.kil(server, "transport_error", "fs-chat", "stands for a stopped node")
        await asyncio.sleep(2.5)  # two attempts to join the listed, dead server meanwhile
        out = capsys.readouterr().out.splitlines()
    finally:
        await node.close()
    assert out[0] == "* joined the chat (1 here)"
    assert out[1:] == ["* lost the server (transport_error), waiting for it to come back"]


def test_dev_setup_makes_the_venv_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import dev
    finally:
        sys.path.remove(str(ROOT))
    calls: list[Any] = []
    monkeypatch.setattr(dev, "ensure_venv", lambda: calls.append("venv"))
    monkeypatch.setattr(dev, "run", lambda *cmd: calls.append(cmd) or 0)
    assert dev.main(["setup"]) == 0
    assert calls == ["venv"]  # no test suite to sit through
    intro = (ROOT / "docs" / "intro.md").read_text()
    assert "$ python3 dev.py setup\n" in intro and "$ python3 dev.py test\n" not in intro


def test_part_2_says_to_stop_part_1s_seed_first() -> None:
    intro = (ROOT / "docs" / "intro.md").read_text()
    first = intro.index("python -m aemp run seed nodeid seed binds 127.0.0.1:4040")
    second = intro.index("python -m aemp run seed1 nodeid seed1 binds 127.0.0.1:4040")
    between = intro[first:second]
    assert "stop part 1's seed" in between and "address already in use" in between


async def test_a_host_configured_with_spawn_allow_as_part_7_says(net: Any) -> None:  # noqa: F811
    """Part 7, "What runs where": a host set up with spawn_allow alone (no service)
    imports the spawn target's module itself and runs it."""
    from test_tutorial import commands

    (profile,) = commands("python -m aemp profile host2")
    (run,) = commands("python -m aemp run host2")
    await net.aemp(profile)
    await net.seed()
    host = await net.aemp_run(run)
    pair = await net.example("spawn_pair.py", "host2")
    assert await pair.wait() == 0, pair.transcript()
    intro = (ROOT / "docs" / "intro.md").read_text()
    shown = intro.split("$ python eg/spawn_pair.py host2\n", 1)[1].split("\n```", 1)[0]
    assert pair.out == shown.splitlines()
    await host.stop()


def test_verbose_after_the_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from aemp._cli import main

    write_config({"seeds": [f"127.0.0.1:{free_port()}"], "secret": "s"})
    assert main(["cal", "nobody#port", "x", "--timeout", "0.5", "-v"]) == 1
    err = capsys.readouterr().err
    assert "INFO aemp.transport: node anon/" in err  # -v took effect: INFO lines
    assert err.splitlines()[-1].startswith("aemp: cal: ")


async def test_wait_joined_of_a_seed_that_lists_itself_and_a_node_without_network() -> None:
    async with aemp.Node(nodeid="fs-solo") as node:
        assert await node.wait_joined(timeout=5) == "fs-solo"
    addr = f"127.0.0.1:{free_port()}"
    async with aemp.Node(nodeid="fs-s", binds=[addr], seeds=[addr, addr], secret="s") as node:
        assert await node.wait_joined(timeout=5) == "fs-s"
