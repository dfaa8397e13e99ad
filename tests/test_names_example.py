"""eg/names_workers.py runs and prints what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = """\
ann is worker 0 (token 1)
bob is worker 1 (token 2)
cat is worker 2 (token 3)
bob stopped
dan is worker 1 (token 4)
number 0: held, token 1
number 1: held, token 4
number 2: held, token 3
ann stopped
cat stopped
dan stopped
"""


def test_workers_hold_worker_numbers() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "eg" / "names_workers.py")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == EXPECTED
