"""The aemp command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aemp

BIN = Path(__file__).resolve().parent.parent / "bin" / "aemp"


def aemp_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BIN), *args], capture_output=True, text=True, timeout=30
    )


def test_version() -> None:
    r = aemp_cmd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"aemp {aemp.__version__}"
    assert aemp_cmd("version").stdout.strip() == f"aemp {aemp.__version__}"


def test_help() -> None:
    r = aemp_cmd("--help")
    assert r.returncode == 0 and "usage: aemp" in r.stdout


def test_unknown_command_exits_2_with_one_line() -> None:
    r = aemp_cmd("frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr


def test_not_yet_available_command_says_so() -> None:
    r = aemp_cmd("trace", "seed")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"aemp: 'trace' is not available in aemp {aemp.__version__} yet; "
        "see 'aemp --help' for what is"
    )
