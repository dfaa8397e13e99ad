"""Run eg/diskd.py (docs/diskd.md) as a user does: daemons and `list`, as processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EG = ROOT / "eg" / "diskd.py"
SECRET = "diskd-test-secret"


def lsblk_json(*disks: tuple[str, int, list[str | None]]) -> str:
    """What `lsblk --json --bytes -o NAME,SIZE,TYPE,MOUNTPOINTS` prints: one disk
    per (name, size, mount points), the first with the others as its partitions."""
    first, *parts = disks

    def dev(name: str, size: int, points: list[str | None], kind: str) -> dict[str, Any]:
        return {"name": name, "size": size, "type": kind, "mountpoints": points or [None]}

    top = dev(*first, "disk")
    if parts:
        top["children"] = [dev(*p, "part") for p in parts]
    return json.dumps({"blockdevices": [top]}, indent=3)


def rundir(base: Path, name: str) -> Path:
    """A private XDG_RUNTIME_DIR: each "machine" has its own control sockets."""
    d = base / name
    d.mkdir(mode=0o700)
    return d


def env(run: Path, **more: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("DISKD_FAKE", "DISKD_BIND")}
    return {**out, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(run), "AEMP_SECRET": SECRET,
            **more}  # fmt: skip


class Daemon:
    """`python eg/diskd.py ARGS` (under `ip netns exec NS` if given); its output kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self.readers = [
            asyncio.ensure_future(self._read(proc.stdout, self.out)),
            asyncio.ensure_future(self._read(proc.stderr, self.err)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))

    @classmethod
    async def start(cls, run: Path, *args: str, ns: str | None = None, **more: str) -> Daemon:
        pre = ["ip", "netns", "exec", ns] if ns else []
        proc = await asyncio.create_subprocess_exec(
            *pre, sys.executable, str(EG), *args, cwd=str(ROOT), env=env(run, **more),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    def log(self, text: str) -> list[str]:
        return [line for line in self.err if text in line]

    async def stop(self) -> None:
        """SIGKILL, by PID, then wait for it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for r in self.readers:
            await r


async def run_list(
    run: Path, *args: str, ns: str | None = None, **more: str
) -> tuple[int, str, str]:
    """`python eg/diskd.py list ARGS`: its status, stdout and stderr."""
    pre = ["ip", "netns", "exec", ns] if ns else []
    proc = await asyncio.create_subprocess_exec(
        *pre, sys.executable, str(EG), "list", *args, cwd=str(ROOT), env=env(run, **more),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rows(out: str) -> list[list[str]]:
    """The disk lines of `list`'s table, split (mount points as one field)."""
    lines = out.splitlines()
    assert lines and lines[0].split()[:5] == ["MACHINE", "HOST", "DISK", "SIZE", "MOUNTED"], out
    got = []
    for line in lines[1:]:
        if line.startswith(("note: ", "(")):
            continue
        machine, _host, disk, size, mounted, points = line.split(None, 5)
        got.append([machine, disk, size, mounted, points])
    return got
