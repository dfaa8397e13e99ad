"""eg/diskd.py (docs/diskd.md) in the host's own namespace: seeds, no discovery.

Two daemons on 127.0.0.1 (one the other's seed), each with a fake lsblk
answer and its own runtime directory (its own "machine" for the control
socket); `list` from either shows the disks of both. Also: `list` with no
local daemon, and an lsblk that is missing, fails, hangs or answers
garbage: logged once, tried again, the node unharmed. No multicast is ever
sent here (--no-discovery everywhere): tests/test_diskd_netns.py runs the
example with discovery, between network namespaces.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, until
from diskd_helpers import EG, Daemon, env, lsblk_json, rows, run_list, rundir

A_DISKS = lsblk_json(("sda", 500 * 2**30, ["/"]), ("sda1", 2**30, ["/boot", "/efi"]))
B_DISKS = lsblk_json(("sdb", 2 * 2**40, []), ("sdb1", 2**20, [None]))


async def listed(run: Path, want: int, **more: str) -> list[list[str]]:
    """`list`, asked again until it shows `want` disks (each try a new process)."""
    got: list[list[str]] = []
    out = ""

    async def again() -> None:
        nonlocal got, out
        while True:
            rc, out, err = await run_list(run, **more)
            if rc == 1 and "no diskd node runs on this host" in err:
                await asyncio.sleep(0.2)  # not up yet, or not published yet
                continue
            assert rc == 0, (out, err)
            got = rows(out)
            if len(got) == want:
                return
            await asyncio.sleep(0.2)

    try:
        await asyncio.wait_for(again(), 30)
    except TimeoutError:
        raise AssertionError(f"list never showed {want} disks; last:\n{out}") from None
    return got


async def test_list_shows_every_disk_of_every_node_and_forgets_a_dead_one(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(A_DISKS)
    (tmp_path / "b.json").write_text(B_DISKS)
    run_a, run_b = rundir(tmp_path, "a"), rundir(tmp_path, "b")
    pa, pb = free_port(), free_port()
    a = await Daemon.start(run_a, "--nodeid", "diskd/a", "--bind", f"127.0.0.1:{pa}",
                           "--no-discovery", "--interval", "0.5",
                           "--fake", str(tmp_path / "a.json"))  # fmt: skip
    b = await Daemon.start(run_b, "--nodeid", "diskd/b", "--bind", f"127.0.0.1:{pb}",
                           "--seed", f"127.0.0.1:{pa}", "--interval", "0.5",
                           DISKD_FAKE=str(tmp_path / "b.json"))  # fmt: skip
    try:
        both = [
            ["diskd/a", "sda", "500.0G", "yes", "/"],
            ["diskd/a", "sda1", "1.0G", "yes", "/boot /efi"],
            ["diskd/b", "sdb", "2.0T", "no", "-"],
            ["diskd/b", "sdb1", "1.0M", "no", "-"],
        ]
        assert await listed(run_a, 4) == both
        assert await listed(run_b, 4) == both
        # a disk mounted on b: published at its next read
        (tmp_path / "b.json").write_text(lsblk_json(("sdb", 2 * 2**40, ["/srv"])))
        assert await listed(run_a, 3) == [*both[:2], ["diskd/b", "sdb", "2.0T", "yes", "/srv"]]
        # the node named
        rc, out, _ = await run_list(run_b, "--node", "diskd/b")
        assert rc == 0 and "(3 disks on 2 machines, as diskd/b sees them)" in out
        await b.stop()  # its entry leaves the database with it
        assert await listed(run_a, 2) == both[:2]
        assert a.log("WARNING") == [] and a.proc.returncode is None
        assert a.out == [f"diskd: node diskd/a is up, listening on 127.0.0.1:{pa}"]
    finally:
        await a.stop()
        await b.stop()


async def test_list_without_a_local_node_says_so_and_fails(tmp_path: Path) -> None:
    run = rundir(tmp_path, "empty")
    rc, out, err = await run_list(run)
    assert rc == 1 and out == ""
    assert err == (f"diskd: no diskd node runs on this host (none in {run}/aemp): "
                   "start one with: python eg/diskd.py\n")  # fmt: skip
    rc, out, err = await run_list(run, "--node", "diskd/nobody")
    assert rc == 1 and out == "" and "no node diskd/nobody runs here" in err


FAKE_LSBLK = """#!/bin/sh
case "$(/bin/cat {mode})" in
  garbage) echo '{{"blockdevices": [{{"name": "sda", "size": "big"}}]}}'; exit 0 ;;
  notjson) echo 'NAME SIZE'; exit 0 ;;
  fail) echo 'lsblk: failed to access sysfs directory' >&2; exit 32 ;;
  hang) exec /bin/sleep 30 ;;
  old)  # util-linux before 2.37: no MOUNTPOINTS column, sizes as strings
    case "$*" in *MOUNTPOINTS*) echo 'lsblk: unknown column: MOUNTPOINTS' >&2; exit 1 ;; esac
    echo '{{"blockdevices": [{{"name": "hda", "size": "1073741824", "mountpoint": "/old"}}]}}' ;;
  *) /bin/cat {good} ;;
esac
"""


async def test_a_missing_failing_hanging_or_garbled_lsblk_is_logged_once_and_retried(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mode, good = tmp_path / "mode", tmp_path / "good.json"
    good.write_text(A_DISKS)

    def set_mode(stage: str) -> None:
        # at once, never half written: the fake lsblk reads the file at any
        # moment, and an empty one is its good answer (a stray recovery)
        (tmp_path / "mode.new").write_text(stage)
        os.replace(tmp_path / "mode.new", mode)

    set_mode("notjson")
    script = bin_dir / "lsblk"
    script.write_text(FAKE_LSBLK.format(mode=mode, good=good))
    script.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    run, run_m = rundir(tmp_path, "run"), rundir(tmp_path, "missing")
    port, port_m = free_port(), free_port()
    node = await Daemon.start(run, "--nodeid", "diskd/x", "--bind", f"127.0.0.1:{port}",
                              "--no-discovery", "--interval", "0.3", "--timeout", "0.5",
                              PATH=str(bin_dir))  # fmt: skip
    missing = await Daemon.start(run_m, "--nodeid", "diskd/m", "--bind", f"127.0.0.1:{port_m}",
                                 "--seed", f"127.0.0.1:{port}", "--interval", "0.3",
                                 PATH=str(empty))  # fmt: skip
    try:
        await until(lambda: node.out and missing.out, 30, "both up")
        stages = [
            ("notjson", "lsblk's answer is not JSON: b'NAME SIZE\\n'"),
            ("garbage", "lsblk's answer has a bad size for 'sda': 'big'"),
            ("fail", "lsblk failed with status 32: lsblk: failed to access sysfs directory"),
            ("hang", "lsblk gave no answer within 0.5 s"),
        ]
        for i, (stage, text) in enumerate(stages):
            set_mode(stage)
            await until(lambda text=text: node.log(text), 20, f"the log saying {text!r}")
            await asyncio.sleep(1.2)  # several more tries: still said once
            assert len(node.log(text)) == 1, node.err
            assert len(node.log("WARNING")) == i + 1, node.err
            rc, out, err = await run_list(run)  # the node still answers
            assert rc == 0, err
            assert f"note: diskd/x: {text}" in out
        set_mode("notjson")  # a problem said before, while still failing: not again
        await asyncio.sleep(1.2)
        assert len(node.log("lsblk's answer is not JSON")) == 1, node.err
        assert len(node.log("WARNING")) == len(stages), node.err
        set_mode("good")
        await until(lambda: node.log("the disks are read again (2 of them)"), 20, "recovered")
        got = await listed(run, 2)
        assert got == [["diskd/x", "sda", "500.0G", "yes", "/"],
                       ["diskd/x", "sda1", "1.0G", "yes", "/boot /efi"]]  # fmt: skip
        note = "note: diskd/m: there is no lsblk command (util-linux) on PATH"
        for _ in range(100):  # diskd/m joined long ago, or is about to
            rc, out, _ = await run_list(run)
            if note in out:
                break
            await asyncio.sleep(0.2)
        assert note in out
        assert len(missing.log("no lsblk command")) == 1, missing.err
        assert node.proc.returncode is None and missing.proc.returncode is None
        assert not [
            line for line in node.err + missing.err if "ERROR" in line or "Traceback" in line
        ]
    finally:
        await node.stop()
        await missing.stop()


async def test_aemp_stop_and_sigterm_end_the_daemon_cleanly(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(A_DISKS)
    run = rundir(tmp_path, "run")
    for how in ("aemp stop", "SIGTERM"):
        d = await Daemon.start(run, "--nodeid", "diskd/a", "--bind", f"127.0.0.1:{free_port()}",
                               "--no-discovery", "--fake", str(tmp_path / "a.json"))  # fmt: skip
        try:
            assert len(await listed(run, 2)) == 2
            if how == "SIGTERM":
                d.proc.terminate()
            else:
                stop = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "aemp", "stop", "diskd/a", env=env(run),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await asyncio.wait_for(stop.communicate(), 30)
                assert stop.returncode == 0, (out, err)
            assert await asyncio.wait_for(d.proc.wait(), 20) == 0, (how, d.err)
            for r in d.readers:
                await r
            assert list((run / "aemp").glob("*.sock")) == [], how  # its socket removed
            assert not [line for line in d.err if "ERROR" in line or "Traceback" in line], d.err
        finally:
            await d.stop()


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("diskd_example", EG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lsblk_answers_are_read_or_refused_never_anything_else() -> None:
    """parse(): lsblk's JSON as a flat list; anything else is Unreadable, whatever the bytes."""
    diskd = load_example()
    assert diskd.parse(A_DISKS.encode()) == [
        {"name": "sda", "size": 500 * 2**30, "type": "disk", "mountpoints": ["/"],
         "mounted": True},
        {"name": "sda1", "size": 2**30, "type": "part", "mountpoints": ["/boot", "/efi"],
         "mounted": True},
    ]  # fmt: skip
    bad = [b"", b"null", b"[]", b'{"blockdevices": 3}', b'{"blockdevices": [3]}',
           b'{"blockdevices": [{"size": 1}]}', b'{"blockdevices": [{"name": "a", "size": -1}]}',
           b'{"blockdevices": [{"name": "a", "size": true}]}',
           b'{"blockdevices": [{"name": "a", "size": 1, "mountpoints": "/"}]}',
           b'{"blockdevices": [{"name": "a", "size": 1, "mountpoints": [1]}]}',
           b'{"blockdevices": [{"name": "a", "size": 1, "children": {}}]}',
           json.dumps({"blockdevices": [{"name": "a", "size": 1}] * 1001}).encode(),
           b'{"blockdevices": [' * 50 + b"]}" * 50, b"[" * 100_000, b"\xff\xfe"]  # fmt: skip
    nested: dict[str, Any] = {"name": "a", "size": 1}
    for _ in range(20):
        nested = {"name": "a", "size": 1, "children": [nested]}
    bad.append(json.dumps({"blockdevices": [nested]}).encode())
    for raw in bad:
        with pytest.raises(diskd.Unreadable):
            diskd.parse(raw)
    rng = random.Random(16)
    good = A_DISKS.encode()
    for _ in range(20000):  # mutations of a good answer, and random bytes
        if rng.random() < 0.8:
            raw = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        else:
            raw = bytearray(rng.randbytes(rng.randint(0, 64)))
        try:
            got = diskd.parse(bytes(raw))
        except diskd.Unreadable:
            continue
        assert isinstance(got, list)
        for d in got:
            assert isinstance(d["name"], str) and isinstance(d["size"], int) and d["size"] >= 0
            assert d["mounted"] == bool(d["mountpoints"])
