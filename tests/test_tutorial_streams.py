"""docs/intro.md part 14: eg/stream_copy.py runs and prints what the page shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_tutorial import BLOCKS

ROOT = Path(__file__).resolve().parent.parent


def test_stream_copy_prints_what_the_tutorial_shows() -> None:
    shown = [
        code for _, lang, code, _ in BLOCKS if lang == "console" and "eg/stream_copy.py" in code
    ]
    assert len(shown) == 1
    command, *expected = shown[0].splitlines()
    assert command == "$ python eg/stream_copy.py"
    done = subprocess.run(
        [sys.executable, str(ROOT / "eg" / "stream_copy.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == expected
