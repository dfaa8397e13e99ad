"""The configuration file: layers and precedence, templates, services, safe writes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import cli_services
import pytest

import aemp
from aemp import _config
from aemp._config import (
    Config,
    check_document,
    config_path,
    effective_keys,
    full_config,
    load_file,
    profile_chain,
    save_file,
)


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def cfg() -> Path:
    return config_path()  # the temporary file conftest points AEMP_CONFIG at


# ---------------------------------------------------------------- where and what


def test_path_from_env_else_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AEMP_CONFIG", str(tmp_path / "x.json"))
    assert config_path() == tmp_path / "x.json"
    monkeypatch.delenv("AEMP_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path() == tmp_path / ".config" / "aemp" / "config.json"


def test_missing_file_is_empty(cfg: Path) -> None:
    assert not cfg.exists()
    assert load_file(cfg) == {"version": 1}
    assert effective_keys("p", {}) == {"nodeid": "p/"}


LAYERED = {
    "version": 1,
    "monitor_timeout": 11,
    "connect_interval": 1,
    "secret": "top",
    "profile": {
        "grand": {"monitor_timeout": 12, "secret": "grand", "seeds": ["127.0.0.1:1"]},
        "parent": {"parent": "grand", "monitor_timeout": 13, "binds": ["127.0.0.1:0"]},
        "child": {"parent": "parent", "monitor_timeout": 14},
    },
}


def test_precedence_args_defaults_parents_profile(cfg: Path) -> None:
    write(cfg, LAYERED)
    args = {"monitor_timeout": 1.5, "nodelay": False, "secret": "arg"}
    keys = effective_keys("child", args)
    assert keys == {
        "monitor_timeout": 14,  # the profile beats its parents
        "secret": "grand",  # the farthest ancestor beats the default section
        "seeds": ["127.0.0.1:1"],
        "binds": ["127.0.0.1:0"],
        "connect_interval": 1,  # the default section beats the arguments
        "nodelay": False,  # an argument nobody else sets survives
        "nodeid": "child/",
    }
    assert effective_keys("parent", {})["monitor_timeout"] == 13
    assert effective_keys("grand", {})["monitor_timeout"] == 12
    assert effective_keys("elsewhere", args)["monitor_timeout"] == 11  # no such profile


def test_force_puts_arguments_on_top(cfg: Path) -> None:
    write(cfg, LAYERED)
    keys = effective_keys("child", {"monitor_timeout": 1.5, "secret": "arg"}, force=True)
    assert keys["monitor_timeout"] == 1.5 and keys["secret"] == "arg"
    assert keys["connect_interval"] == 1 and keys["seeds"] == ["127.0.0.1:1"]


def test_norc_ignores_the_file_even_a_broken_one(cfg: Path) -> None:
    cfg.write_text("{broken")
    assert effective_keys("child", {"secret": "x"}, norc=True) == {
        "secret": "x",
        "nodeid": "child/",
    }
    with pytest.raises(aemp.ConfigError, match="not valid JSON"):
        effective_keys("child", {})


def test_parent_chain_farthest_first() -> None:
    assert profile_chain(LAYERED, "child", "f") == ["grand", "parent", "child"]
    assert profile_chain(LAYERED, "nobody", "f") == []


@pytest.mark.parametrize(
    ("profiles", "start", "match"),
    [
        ({"a": {"parent": "a"}}, "a", r"loop: 'a' -> 'a'"),
        ({"a": {"parent": "b"}, "b": {"parent": "a"}}, "a", r"loop: 'a' -> 'b' -> 'a'"),
        (
            {"x": {"parent": "a"}, "a": {"parent": "b"}, "b": {"parent": "a"}},
            "x",
            r"parents of profile 'x' form a loop: 'a' -> 'b' -> 'a'",
        ),
        ({"a": {"parent": "gone"}}, "a", r"profile 'a' names parent 'gone', which is not"),
    ],
)
def test_parent_loops_and_missing_parents(
    cfg: Path, profiles: dict[str, Any], start: str, match: str
) -> None:
    write(cfg, {"version": 1, "profile": profiles})
    with pytest.raises(aemp.ConfigError, match=match) as e:
        effective_keys(start, {})
    assert str(cfg) in str(e.value)


def test_values_in_the_file_are_checked_with_their_place(cfg: Path) -> None:
    write(cfg, {"profile": {"p": {"monitor_timeout": "soon"}}})
    with pytest.raises(aemp.ConfigError) as e:
        effective_keys("p", {})
    assert str(e.value).startswith(f"{cfg}: profile 'p': 'monitor_timeout' must be a positive")
    effective_keys("other", {})  # a profile that is not used is not in the way
    write(cfg, {"colour": "red"})
    with pytest.raises(aemp.ConfigError, match=r"default section: unknown configuration key"):
        effective_keys("other", {})
    write(cfg, {"profile": {"p": {"binds": ["127.0.0.1:99999"]}}})
    with pytest.raises(aemp.ConfigError, match=r"profile 'p': 'binds' entry '127.0.0.1:99999'"):
        effective_keys("p", {})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"version": 1,\n  "secret": "x",\n  oops\n}', r":3:3: not valid JSON: Expecting"),
        ("", r":1:1: not valid JSON"),
        ('{"a": 1,}', r":1:9: not valid JSON"),
        ("[1, 2]", r": the configuration must be a JSON object \(got a array\)"),
        ('{"version": 2}', r': "version" is 2: this aemp reads version 1'),
        ('{"profile": []}', r': "profile" must be an object of profiles'),
        ('{"profile": {"p": 5}}', r": profile 'p' must be an object"),
        ('{"profile": {"p": {"parent": 5}}}', r"profile 'p': 'parent' must be a profile name"),
    ],
)
def test_corrupt_files_name_file_and_place(cfg: Path, text: str, match: str) -> None:
    cfg.write_text(text)
    with pytest.raises(aemp.ConfigError, match=match) as e:
        load_file(cfg)
    assert str(e.value).startswith(str(cfg))


def test_not_utf8_names_line_and_column(cfg: Path) -> None:
    cfg.write_bytes(b'{\n  "secret": "\xff"\n}')
    with pytest.raises(aemp.ConfigError, match=r":2:14: not UTF-8"):
        load_file(cfg)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(aemp.ConfigError, match=r"dir.json: cannot read the configuration file"):
        load_file(tmp_path / "dir.json")


def test_check_document_sees_every_profile() -> None:
    check_document(LAYERED, "f")
    bad = {"profile": {"a": {}, "b": {"max_packet": 1}}}
    with pytest.raises(aemp.ConfigError, match=r"f: profile 'b': 'max_packet' must be an int"):
        check_document(bad, "f")
    with pytest.raises(aemp.ConfigError, match=r"loop"):
        check_document({"profile": {"a": {"parent": "a"}}}, "f")


# ---------------------------------------------------------------- writing


def test_save_is_0600_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "config.json"
    save_file(path, {"secret": "s", "profile": {"p": {"nodeid": "n"}}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "version": 1,
        "secret": "s",
        "profile": {"p": {"nodeid": "n"}},
    }
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left behind


def test_save_keeps_an_existing_mode_and_follows_links(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    save_file(real, {"secret": "a"})
    real.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    save_file(link, {"secret": "b"})
    assert link.is_symlink() and json.loads(real.read_text())["secret"] == "b"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.json"
    save_file(path, {"secret": "old"})
    before = path.read_bytes()
    seen: list[str] = []

    def broken_replace(src: str, dst: Any) -> None:
        # at the moment of the rename the new text is complete and on disk
        seen.append(Path(src).read_text())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_config.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        save_file(path, {"secret": "new"})
    assert path.read_bytes() == before
    assert json.loads(seen[0])["secret"] == "new"
    assert os.listdir(tmp_path) == ["config.json"]


# ---------------------------------------------------------------- configure()


async def test_configure_layers_the_file(cfg: Path) -> None:
    write(cfg, {"monitor_timeout": 7, "profile": {"w": {"nodeid": "w-%n"}}})
    node = await aemp.configure("w", monitor_timeout=3, connect_interval=0.5)
    try:
        assert node.id == f"w-{socket.gethostname()}"
        assert node.config.monitor_timeout == 7 and node.config.connect_interval == 0.5
    finally:
        await node.close()
    node = await aemp.configure("w", force=True, monitor_timeout=3, nodeid="x/%u")
    try:
        assert node.config.monitor_timeout == 3
        assert node.id.startswith("x/") and len(node.id) == 12
    finally:
        await node.close()


async def test_configure_norc_and_default_profile(cfg: Path) -> None:
    write(cfg, {"nodeid": "from-file"})
    node = await aemp.configure(norc=True)
    try:
        assert node.id.startswith(socket.gethostname() + "/")
        assert len(node.id) == len(socket.gethostname()) + 11
    finally:
        await node.close()
    node = await aemp.configure()
    try:
        assert node.id == "from-file"
    finally:
        await node.close()


@pytest.mark.parametrize(
    ("template", "check"),
    [
        ("plain", lambda i: i == "plain"),
        ("%n", lambda i: i == socket.gethostname()),
        ("a/%u/b", lambda i: i.startswith("a/") and i.endswith("/b") and len(i) == 14),
        ("a/", lambda i: i.startswith("a/") and len(i) == 12 and i[2:].isalnum()),
        ("%n/", lambda i: i.startswith(socket.gethostname() + "/")),
    ],
)
async def test_nodeid_templates_from_the_file(cfg: Path, template: str, check: Any) -> None:
    write(cfg, {"profile": {"t": {"nodeid": template}}})
    node = await aemp.configure("t")
    try:
        assert check(node.id), node.id
    finally:
        await node.close()


async def test_configure_starts_services(cfg: Path) -> None:
    cli_services.started.clear()
    sys.modules.pop("cli_module_service", None)
    services = [
        "cli_services:record",
        ["cli_services:record", 1, "two"],
        "cli_module_service",
        ["cli_services:record_async", "x"],
    ]
    write(cfg, {"profile": {"s": {"nodeid": "svc", "services": services}}})
    node = await aemp.configure("s")
    try:
        assert cli_services.started == [
            ("record", "svc", ()),
            ("record", "svc", (1, "two")),
            ("module imported",),
            ("record_async", "svc", "x"),
        ]
    finally:
        await node.close()


@pytest.mark.allow_error_log
async def test_a_failing_service_fails_configure(
    cfg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(cfg, {"profile": {"s": {"nodeid": "svc", "services": ["cli_services:fail"]}}})
    with pytest.raises(RuntimeError, match="refuses to start") as e:
        await aemp.configure("s")
    assert "raised by the service 'cli_services:fail' of node 'svc'" in e.value.__notes__
    assert "service cli_services:fail failed: RuntimeError" in caplog.text
    assert aemp.NODE() != "svc"  # the node was closed, not left half started
    node = await aemp.configure("s", norc=True)  # and configure can be called again
    await node.close()


@pytest.mark.parametrize(
    ("service", "match"),
    [
        ("no_such_module_here:f", "cannot be loaded: ModuleNotFoundError"),
        ("cli_services:missing", "cannot be loaded: AttributeError"),
        ("no_such_module_here", "cannot be loaded: ModuleNotFoundError"),
    ],
)
async def test_a_service_that_cannot_be_found(cfg: Path, service: str, match: str) -> None:
    write(cfg, {"services": [service]})
    with pytest.raises(aemp.ConfigError, match=match):
        await aemp.configure("s")


@pytest.mark.parametrize(
    ("services", "match"),
    [
        (["not a name"], "'services' entry 'not a name'"),
        ([["pkg.mod"]], r"'services' entry \['pkg.mod'\]"),
        ([[]], r"'services' entry \[\]"),
        ("pkg:f", "'services' must be a list"),
    ],
)
def test_service_syntax_is_checked(services: Any, match: str) -> None:
    with pytest.raises(aemp.ConfigError, match=match):
        Config.from_keys({"services": services})


def test_full_config_has_every_key_with_defaults() -> None:
    full = full_config({"nodeid": "n/", "seeds": ("127.0.0.1:1",)})
    assert full["nodeid"] == "n/" and full["seeds"] == ["127.0.0.1:1"]
    assert full["monitor_timeout"] == 30.0 and full["framing_format"] == ["msgpack", "json"]
    assert set(full) == {f.name for f in dataclasses.fields(Config)}  # every key there is
