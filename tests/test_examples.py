"""The README quickstart's demo and the programs in eg/ run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_transcript() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "eg" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for expected in (
        "ping port got pong 3",
        "cal square(12) -> 144 (answered by worker-1)",
        "monitor saw the worker die with ('die', 'ValueError: worker-1 refuses",
        "square(6) = 36 from worker-4",
        "supervisor: worker exited normally, not restarting it",
        "node closed, bye",
    ):
        assert expected in out, f"{expected!r} missing from the demo output:\n{out}"


def test_readme_python_blocks_run() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks, "README.md has no python example"
    for code in blocks:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert out.splitlines() == ["5", "adder died: ('retired',)"]
