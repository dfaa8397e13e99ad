"""The aemp command as a user runs it: configuration edits, help, mistakes, nodes."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import free_port

import aemp
from aemp._cli import _table, main
from aemp._config import config_path
from aemp.tls import make_certificate, ssl_contexts

TESTS = Path(__file__).resolve().parent
BIN = TESTS.parent / "bin" / "aemp"


def env() -> dict[str, str]:
    """The test's environment (AEMP_CONFIG from conftest) and the test services."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), e.get("PYTHONPATH")]))
    return e


def aemp_cmd(
    *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "aemp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        input=stdin,
    )


class Run:
    """The command in this process: quicker, and the same code."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        rc = main(list(args))
        out, err = self.capsys.readouterr()
        return rc, out, err

    def ok(self, *args: str) -> str:
        rc, out, err = self(*args)
        assert rc == 0, err
        assert err == ""
        return out


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


@pytest.fixture
def cfg() -> Path:
    return config_path()


def doc(cfg: Path) -> Any:
    return json.loads(cfg.read_text())


def section(cfg: Path, profile: str | None = None) -> Any:
    d = doc(cfg)
    return d if profile is None else d["profile"][profile]


# ---------------------------------------------------------------- help and version

REQUIRED = {
    *[
        "setnodeid",
        "delnodeid",
        "gensecret",
        "setsecret",
        "delsecret",
        "gencert",
        "setcert",
        "delcert",
    ],
    *["setseeds", "delseeds", "addseed", "delseed", "setbinds", "delbinds", "addbind", "delbind"],
    *[
        "setservices",
        "delservices",
        "addservice",
        "delservice",
        "profile",
        "setparent",
        "delparent",
    ],
    *["delprofile", "showprofile", "showconfig", "run", "snd", "cal", "mon", "help", "version"],
    *["nodes", "db", "trace"],
    *(
        f"{op}{key}"
        for op in ("", "set", "del")
        for key in [
            "monitor_timeout",
            "connect_interval",
            "framing_format",
            "auth_offer",
            "auth_accept",
            "nodelay",
            "secure",
            "spawn_allow",
            "max_packet",
            "blocking_threads",
            "max_objects",
            "nodeid",
            "secret",
            "cert",
            "seeds",
            "binds",
            "services",
        ]
    ),
    "parent",
}


def test_version() -> None:
    r = aemp_cmd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"aemp {aemp.__version__}"
    assert aemp_cmd("version").stdout.strip() == f"aemp {aemp.__version__}"


def test_help_lists_every_command(run: Run) -> None:
    r = aemp_cmd("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: aemp")
    commands, by_name = _table()
    assert set(by_name) >= REQUIRED, REQUIRED - set(by_name)
    for cmd in commands:
        assert f"\n  {', '.join((cmd.name, *cmd.aliases))}" in r.stdout, cmd.name
    assert run.ok("help") == r.stdout
    assert run() == (2, "", r.stdout)  # no command: a mistake, help on stderr


def test_help_explains_each_command(run: Run) -> None:
    _, by_name = _table()
    for name, cmd in by_name.items():
        text = run.ok("help", name)
        assert text.startswith(f"usage: aemp {cmd.name}"), name
        assert cmd.summary in text
        assert run.ok(name, "--help") == text
    assert "Also spelled: seeds." in run.ok("help", "setseeds")
    assert "usage: aemp cal [--timeout SECONDS] PORT ARGS..." in run.ok("help", "cal")
    assert "usage: aemp db [--timeout SECONDS] [--watch] [FAMILY]" in run.ok("help", "db")
    assert "usage: aemp trace [--timeout SECONDS] [--dot] [--max N] NODE" in run.ok("trace", "-h")
    assert "\n  nodes [--json]  " in run.ok("--help")


def test_bin_script_runs_the_command() -> None:
    r = subprocess.run(
        [sys.executable, str(BIN), "version"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0 and r.stdout.strip() == f"aemp {aemp.__version__}"


# ---------------------------------------------------------------- editing


@pytest.mark.parametrize(
    ("key", "given", "stored"),
    [
        ("nodeid", "seed/%n", "seed/%n"),
        ("secret", "s3cret", "s3cret"),
        ("secret", '"[not json list]"', "[not json list]"),
        ("seeds", "127.0.0.1:4040,127.0.0.1:4041", ["127.0.0.1:4040", "127.0.0.1:4041"]),
        ("seeds", '["127.0.0.1:4040"]', ["127.0.0.1:4040"]),
        ("binds", "*:4040", ["*:4040"]),
        ("binds", '["127.0.0.1:*", "[::1]:0"]', ["127.0.0.1:*", "[::1]:0"]),
        ("services", "a.b:c,d.e", ["a.b:c", "d.e"]),
        ("services", '[["a.b:c", 1, {"k": null}], "d"]', [["a.b:c", 1, {"k": None}], "d"]),
        ("monitor_timeout", "5", 5),
        ("monitor_timeout", "0.25", 0.25),
        ("connect_interval", "1.5", 1.5),
        ("framing_format", "json,msgpack", ["json", "msgpack"]),
        ("auth_offer", "hmac_sha3_512", ["hmac_sha3_512"]),
        ("auth_accept", '["hmac_sha3_512", "cleartext"]', ["hmac_sha3_512", "cleartext"]),
        ("nodelay", "false", False),
        ("nodelay", "on", True),
        ("secure", "yes", True),
        ("spawn_allow", "workers:squarer,jobs.x:*", ["workers:squarer", "jobs.x:*"]),
        ("spawn_allow", "[]", []),
        ("max_packet", "1048576", 1048576),
        ("blocking_threads", "4", 4),
    ],
)
def test_set_alias_and_del(run: Run, cfg: Path, key: str, given: str, stored: Any) -> None:
    run.ok("set" + key, given)
    assert section(cfg)[key] == stored
    run.ok("del" + key)
    assert key not in section(cfg)
    run.ok("profile", "p", key, given)  # setX is also spelled X
    assert section(cfg, "p")[key] == stored
    assert key not in section(cfg)
    run.ok("profile", "p", "del" + key)
    assert section(cfg, "p") == {}


def test_add_and_remove_list_items(run: Run, cfg: Path) -> None:
    run.ok("addseed", "127.0.0.1:1", "addseed", "127.0.0.1:2,127.0.0.1:3", "addseed", "127.0.0.1:1")
    assert section(cfg)["seeds"] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    run.ok("delseed", "127.0.0.1:2", "delseed", "127.0.0.1:9")
    assert section(cfg)["seeds"] == ["127.0.0.1:1", "127.0.0.1:3"]
    run.ok("addbind", "*:4040", "addbind", '["127.0.0.1:0"]', "delbind", "*:4040")
    assert section(cfg)["binds"] == ["127.0.0.1:0"]
    run.ok("addservice", "m:f", "addservice", '["m:f", 1]', "addservice", "m2")
    assert section(cfg)["services"] == ["m:f", ["m:f", 1], "m2"]
    run.ok("delservice", "m2")
    assert section(cfg)["services"] == ["m:f", ["m:f", 1]]
    run.ok("addservice", "m2", "delservice", '["m:f", 1]')
    assert section(cfg)["services"] == ["m:f", "m2"]
    run.ok("addservice", '["m:f", 2]', "delservice", "m:f")  # the name removes every form
    assert section(cfg)["services"] == ["m2"]
    run.ok("delservices", "delseeds", "delbinds")
    assert section(cfg) == {"version": 1, "profile": {}}


def test_gensecret(run: Run, cfg: Path) -> None:
    run.ok("gensecret", "profile", "p", "gensecret")
    a, b = section(cfg)["secret"], section(cfg, "p")["secret"]
    assert len(a) == len(b) == 64 and a.isalnum() and b.isalnum() and a != b


def test_gencert_and_setcert(run: Run, cfg: Path, tmp_path: Path) -> None:
    run.ok("gencert")
    pem = section(cfg)["cert"]
    ssl_contexts(pem)  # loads as key and certificate
    other = make_certificate("other")
    (tmp_path / "c.pem").write_text(other)
    run.ok("profile", "p", "setcert", str(tmp_path / "c.pem"))
    assert section(cfg, "p")["cert"] == other
    r = aemp_cmd("profile", "q", "cert", "-", stdin=other)
    assert r.returncode == 0, r.stderr
    assert section(cfg, "q")["cert"] == other
    run.ok("delcert")
    assert "cert" not in section(cfg)


def test_issue_example_chain(run: Run, cfg: Path) -> None:
    run.ok("profile", "seed", "binds", "*:4040", "gensecret")
    assert section(cfg, "seed")["binds"] == ["*:4040"]
    assert len(section(cfg, "seed")["secret"]) == 64
    assert stat_mode(cfg) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_profiles_parents_and_show(run: Run, cfg: Path) -> None:
    run.ok(
        "secret", "top", "monitor_timeout", "9",
        "profile", "base", "seeds", "127.0.0.1:4040", "monitor_timeout", "8",
        "profile", "worker", "parent", "base", "nodeid", "w/%u",
    )  # fmt: skip
    assert doc(cfg)["profile"] == {
        "base": {"seeds": ["127.0.0.1:4040"], "monitor_timeout": 8},
        "worker": {"parent": "base", "nodeid": "w/%u"},
    }
    shown = json.loads(run.ok("showprofile", "worker"))
    assert shown == {
        "secret": "top",
        "monitor_timeout": 8,
        "seeds": ["127.0.0.1:4040"],
        "nodeid": "w/%u",
    }
    full = json.loads(run.ok("showconfig", "worker", "monitor_timeout", "1", "nodelay", "false"))
    assert full["profile"] == "worker" and full["monitor_timeout"] == 8.0  # the file wins
    assert full["nodelay"] is False and full["connect_interval"] == 2.0  # argument, built-in
    forced = json.loads(run.ok("showconfig", "worker", "monitor_timeout", "1", "force", "true"))
    assert forced["monitor_timeout"] == 1.0
    bare = json.loads(run.ok("showconfig", "worker", "norc", "true"))
    assert bare["nodeid"] == "worker/" and bare["seeds"] == [] and bare["secret"] is None
    host = json.loads(run.ok("showconfig"))
    assert host["profile"] == socket.gethostname() and host["secret"] == "top"
    assert json.loads(run.ok("profile", "base", "showconfig"))["profile"] == "base"
    run.ok("profile", "worker", "delparent")
    assert json.loads(run.ok("showprofile", "worker"))["monitor_timeout"] == 9
    run.ok("delprofile", "worker", "delprofile", "nobody")
    assert list(doc(cfg)["profile"]) == ["base"]


def test_read_only_commands_do_not_create_the_file(run: Run, cfg: Path) -> None:
    run.ok("showconfig", "x")
    run.ok("help", "setseeds")
    assert not cfg.exists()


def test_a_profile_alone_is_created(run: Run, cfg: Path) -> None:
    run.ok("profile", "empty")
    assert section(cfg, "empty") == {}


def test_an_unchanged_file_is_not_rewritten(run: Run, cfg: Path) -> None:
    run.ok("secret", "x")
    before = cfg.stat().st_mtime_ns, cfg.stat().st_ino
    time.sleep(0.01)
    run.ok("secret", "x", "delseeds")
    assert (cfg.stat().st_mtime_ns, cfg.stat().st_ino) == before


# ---------------------------------------------------------------- mistakes


MISTAKES = [
    (["frobnicate"], "unknown command 'frobnicate': expected a command such as"),
    (["secret", "x", "frobnicate"], "unknown command 'frobnicate'"),
    (["--frob"], "unknown option '--frob': expected --help"),
    (["setseeds"], "setseeds: missing SEEDS (a comma-separated list of host:port"),
    (["gensecret", "setseeds"], "setseeds: missing SEEDS"),
    (["profile"], "profile: missing NAME (a profile name): expected 'aemp profile NAME'"),
    (
        ["setseeds", "[1,"],
        "setseeds: argument '[1,' is not valid JSON (Expecting value at column 4)",
    ),
    (["secret", '"open'], "secret: argument '\"open' is not valid JSON"),
    (["setseeds", "[1]"], "setseeds: 'seeds' must be a list of str (got [1], a list)"),
    (["setseeds", "localhost"], "'seeds' entry 'localhost' is not valid: expected 'host:port'"),
    (["setbinds", "127.0.0.1:99999"], "'binds' entry '127.0.0.1:99999' is not valid"),
    (
        ["setmonitor_timeout", "-1"],
        "'monitor_timeout' must be a positive number of seconds (got -1)",
    ),
    (["monitor_timeout", "soon"], "'monitor_timeout' must be a positive number of seconds"),
    (["max_packet", "12"], "'max_packet' must be an int of at least 1024 bytes (got 12)"),
    (["nodelay", "maybe"], "'nodelay' must be true or false (got 'maybe', a str)"),
    (["framing_format", "cbor"], "'framing_format' holds 'cbor': expected some of msgpack, json"),
    (["nodeid", "a#b"], "node ID template 'a#b' is not valid"),
    (["nodeid", "%q"], "unknown %-escape"),
    (["addservice", "not a service"], "'services' entry 'not a service' must be"),
    (["setparent", "x"], "setparent applies to a profile: expected 'aemp profile NAME setparent"),
    (["delparent"], "delparent applies to a profile"),
    (["profile", "a", "parent", "a"], "setparent: profile 'a' cannot be its own parent"),
    (
        ["profile", "a", "parent", "b", "profile", "b", "parent", "a"],
        "form a loop: 'a' -> 'b' -> 'a'; nothing was written",
    ),
    (["profile", "a", "parent", "nope"], "profile 'a' names parent 'nope', which is not"),
    (["delprofile", "base"], "profile 'child' names parent 'base'"),
    (["setcert", "/no/such/file.pem"], "setcert: cannot read '/no/such/file.pem': No such file"),
    (["showprofile", "nope"], "showprofile: there is no profile 'nope' in"),
    (["profile", "[1]"], "profile: the profile name must be a non-empty string (got [1])"),
    (["--timeout", "x", "cal", "a", "b"], "--timeout must be a positive number of seconds"),
    (["--timeout"], "--timeout needs SECONDS"),
    (["cal", "--timeout", "0", "a#b"], "--timeout must be a positive number of seconds (got '0')"),
    (["snd", "seed#p"], "snd: missing ARGS: expected 'aemp snd PORT ARGS...'"),
    (["cal"], "cal: missing PORT (a port ID and a message)"),
    (["cal", "n#p"], "cal: missing ARGS: expected 'aemp cal PORT ARGS...'"),
    (["mon", "a#b", "c"], "mon: too many arguments (2): expected 'aemp mon PORT'"),
    (["cal", "bad port", "x"], "cal: port ID 'bad port' is malformed"),
    (["run", "seed", "colour", "red"], "run: unknown configuration key 'colour'"),
    (
        ["setspawn_allow", "workers"],
        "setspawn_allow: spawn_allow entry 'workers' is not valid: expected 'package.module:",
    ),
    (["run", "norc", "perhaps"], "run: norc must be true or false"),
    (["showconfig", "x", "monitor_timeout", "-5"], "showconfig: 'monitor_timeout' must be"),
    (["nodes", "x"], "nodes: too many arguments (1): expected 'aemp nodes'"),
    (["nodes", "--json=yes"], "nodes: option --json takes no value (got '--json=yes')"),
    (["nodes", "--dot"], "nodes: unknown option '--dot': expected --json or --timeout SECONDS"),
    (["db", "--watch"], "db: --watch needs a FAMILY: expected 'aemp db FAMILY --watch'"),
    (["db", "a", "b"], "db: too many arguments (2): expected 'aemp db [FAMILY]'"),
    (["db", "2fam"], "db: '2fam' is not a family name: family names match [A-Za-z]"),
    (["db", "[1]"], "db: FAMILY must be a non-empty string (got [1])"),
    (["db", "x", "--wach"], "db: unknown option '--wach': expected --watch or --timeout"),
    (["db", "x", "--timeout"], "db: --timeout needs a value: expected '--timeout SECONDS'"),
    (["db", "x", "--timeout=-1"], "--timeout must be a positive number of seconds (got '-1')"),
    (["trace"], "trace: missing NODE (a node ID): expected 'aemp trace NODE'"),
    (["trace", "n#p"], "trace: 'n#p' is not a node ID: expected a node ID such as 'seed'"),
    (["trace", "n", "--max"], "trace: --max needs a value: expected '--max N'"),
    (["trace", "n", "--max", "0"], "trace: --max must be a whole number of nodes, at least 1"),
    (
        ["trace", "--max=many", "n"],
        "--max must be a whole number of nodes, at least 1 (got 'many')",
    ),
    (["help", "frobnicate"], "help: unknown command 'frobnicate'"),
    (["version", "x"], "version: too many arguments (1): expected 'aemp version'"),
]


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistakes_exit_2_with_one_line_and_leave_the_file(
    run: Run, cfg: Path, args: list[str], message: str
) -> None:
    run.ok("secret", "keep", "profile", "base", "profile", "child", "parent", "base")
    before = cfg.read_bytes()
    rc, out, err = run(*args)
    assert rc == 2 and out == ""
    assert err.startswith("aemp: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err
    assert cfg.read_bytes() == before


def test_a_mistake_in_a_subprocess(cfg: Path) -> None:
    r = aemp_cmd("profile", "p", "gensecret", "setseeds", '["x:1",')
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        "aemp: setseeds: argument '[\"x:1\",' is not valid JSON (Expecting value at column 8); "
        'expected JSON, since it starts with [, { or "\n'
    )
    assert not cfg.exists()


@pytest.mark.parametrize("args", [["secret", "x"], ["showprofile", "p"], ["cal", "n#p", "x"]])
def test_a_corrupt_file_is_reported_and_kept(run: Run, cfg: Path, args: list[str]) -> None:
    cfg.write_text('{"version": 1,\n "profile": {"p": {}}\n "secret": "x"}')
    before = cfg.read_bytes()
    rc, out, err = run(*args)
    assert rc == 1 and out == ""
    assert err == (
        f"aemp: {cfg}:3:2: not valid JSON: Expecting ',' delimiter (the file was left as it is)\n"
    )
    assert cfg.read_bytes() == before


def test_a_bad_value_already_in_the_file_blocks_writes(run: Run, cfg: Path) -> None:
    cfg.write_text('{"profile": {"p": {"monitor_timeout": "x"}}}')
    rc, _, err = run("secret", "y")
    assert rc == 2 and f"{cfg}: profile 'p': 'monitor_timeout' must be" in err
    assert "nothing was written" in err
    run.ok("profile", "p", "monitor_timeout", "3", "secret", "y")  # fixing it is allowed
    assert section(cfg, "p") == {"monitor_timeout": 3, "secret": "y"}


@pytest.mark.parametrize(
    "args", [["cal", "n#p", "x"], ["nodes"], ["db", "x", "--watch"], ["trace", "n"]]
)
def test_network_commands_need_seeds(run: Run, cfg: Path, args: list[str]) -> None:
    rc, out, err = run(*args)
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert "no seeds in profile 'aemp' or the default section" in err


# ---------------------------------------------------------------- nodes


class Lines:
    """Whole lines from a child's pipe, waiting a bounded time (select and os.read:
    a buffered readline could hold a line select no longer sees)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buf = b""
        self.seen: list[str] = []
        self.eof = False

    def wait_for(self, needle: str, limit: float = 20) -> str:
        deadline = time.monotonic() + limit
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.seen.append(line.decode() + "\n")
                if needle in self.seen[-1]:
                    return self.seen[-1]
            left = deadline - time.monotonic()
            if self.eof or left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no line with {needle!r}: {''.join(self.seen)}")
            data = os.read(self.fd, 65536)
            self.eof = not data
            self.buf += data

    def rest(self, limit: float = 20) -> str:
        """Everything until the child closes the pipe."""
        deadline = time.monotonic() + limit
        while not self.eof and select.select([self.fd], [], [], deadline - time.monotonic())[0]:
            data = os.read(self.fd, 65536)
            self.eof = not data
            self.buf += data
        return "".join(self.seen) + self.buf.decode()


class Server:
    """`aemp run ...` in a subprocess; stopped by its PID only."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aemp", "run", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env(),
        )
        assert self.proc.stderr is not None
        self.log = Lines(self.proc.stderr)

    def wait_up(self, limit: float = 20) -> str:
        """Wait until the node says it is up; return its node ID."""
        try:
            line = self.log.wait_for(" is up, listening on ", limit)
        except AssertionError:
            self.stop()
            raise
        return line.split(" node ", 1)[1].split(" is up", 1)[0]

    def signal(self, sig: int, limit: float = 20) -> tuple[int, str]:
        self.proc.send_signal(sig)
        log = self.log.rest(limit)
        return self.proc.wait(timeout=limit), log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def servers() -> Iterator[Any]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def wait_file(path: Path, limit: float = 10) -> str:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    return path.read_text()


def test_full_round(servers: Any, cfg: Path, tmp_path: Path) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    portfile = tmp_path / "echo.port"
    service = json.dumps([["cli_services:echo_service", str(portfile)]])
    r = aemp_cmd(
        "gensecret",
        "profile", "aemp", "seeds", addr,
        "profile", "seed", "binds", addr, "services", service,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert section(cfg, "seed")["services"] == [["cli_services:echo_service", str(portfile)]]

    server = servers("seed")
    nodeid = server.wait_up()
    assert nodeid.startswith("seed/") and f"listening on {addr}" in server.log.seen[-1]
    echo = wait_file(portfile)
    assert echo.startswith(nodeid + "#")

    r = aemp_cmd("cal", echo, "echo", "hello", "2", '{"k": [1, null]}', '"3"')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["hello", 2, {"k": [1, None]}, "3"]

    r = aemp_cmd("cal", nodeid, "time")  # the node port answers the time request
    assert r.returncode == 0, r.stderr
    assert abs(json.loads(r.stdout)[0] - time.time()) < 60

    r = aemp_cmd("--timeout", "0.5", "cal", nodeid, "devnull")  # a request without reply
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"aemp: cal: no answer from {nodeid} within 0.5 s\n"
    r = aemp_cmd("mon", "--timeout", "0.5", echo)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"aemp: mon: {echo} did not die within 0.5 s\n"

    watcher = subprocess.Popen(
        [sys.executable, "-m", "aemp", "--verbose", "mon", echo],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    try:
        assert watcher.stderr is not None
        Lines(watcher.stderr).wait_for(f"mon: watching {echo}")
        r = aemp_cmd("snd", echo, "quit", "bye", "1")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert json.loads(out) == ["bye", 1]

    r = aemp_cmd("mon", echo)  # dead now: the node says so at once
    assert r.returncode == 0 and json.loads(r.stdout)[0] == "no_such_port"
    r = aemp_cmd("--timeout", "0.5", "cal", nodeid + "#nosuchport", "x")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert '"no_such_port"' in r.stderr

    rc, log = server.signal(signal.SIGTERM)
    assert rc == 0, log
    assert f"node {nodeid}: SIGTERM received, closing" in log and f"node {nodeid} closed" in log

    r = aemp_cmd("--timeout", "3", "cal", echo, "echo", "x")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("aemp: cal: cannot reach node ")


def test_run_with_keys_and_sigint(servers: Any, cfg: Path) -> None:
    server = servers("nodeid", "direct", "binds", "127.0.0.1:0", "secret", "s", "norc", "true")
    assert server.wait_up() == "direct"
    rc, log = server.signal(signal.SIGINT)
    assert rc == 0 and "SIGINT received" in log, log


def test_a_wrong_secret_is_one_line_naming_the_cause(servers: Any, cfg: Path) -> None:
    port = free_port()
    r = aemp_cmd("secret", "right", "seeds", f"127.0.0.1:{port}",
                 "profile", "seed", "nodeid", "seed", "binds", f"127.0.0.1:{port}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    server = servers("seed")
    server.wait_up()
    assert aemp_cmd("snd", "seed", "devnull", "x").returncode == 0
    # the edits of a line are written before its snd runs, and snd uses profile aemp
    r = aemp_cmd("--timeout", "3", "profile", "aemp", "secret", "wrong", "snd", "seed", "x")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("aemp: snd: cannot reach node 'seed': ")
    assert "authentication failure" in r.stderr
    r = aemp_cmd("--timeout", "3", "mon", "seed#x")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "authentication failure" in r.stderr
    rc, _ = server.signal(signal.SIGTERM)
    assert rc == 0


def test_run_refuses_a_bad_setup_with_one_line(cfg: Path) -> None:
    r = aemp_cmd("run", "nodeid", "x", "binds", "127.0.0.1:0", "norc", "true")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "neither a shared secret nor a certificate" in r.stderr
    r = aemp_cmd("profile", "bad", "services", "cli_services:fail", "secret", "s",
                 "run", "bad")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "aemp: run: RuntimeError: this service refuses to start "
        "(raised by the service 'cli_services:fail' of node 'bad/"
        + r.stderr.split("of node 'bad/")[1].split("'")[0]
        + "')"
    )


def test_cal_to_a_service_shows_the_remote_error(servers: Any, cfg: Path, tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    portfile = tmp_path / "calc.port"
    service = json.dumps([["cli_services:calc_service", str(portfile)]])
    r = aemp_cmd(
        "gensecret",
        "profile", "aemp", "seeds", addr,
        "profile", "seed", "binds", addr, "services", service,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    servers("seed").wait_up()
    calc = wait_file(portfile)
    r = aemp_cmd("cal", calc, "add", "2")  # one argument short: the issue's example
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"aemp: cal: {calc!r} raised TypeError: "), r.stderr
    assert "missing 1 required positional argument" in r.stderr
    r = aemp_cmd("cal", calc, "add", "2", "3")  # the service lives on
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [5]
