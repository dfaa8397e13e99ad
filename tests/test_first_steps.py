"""What a new user tripped over (issue 17): configuration origins, joining,
link logs, `aemp run`'s import path, types, the command line, packaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
