#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py setup``, ``demo`` or ``test``.

Needs nothing but Python 3.11+: the first run makes ``.venv`` and installs
aemp with its test tools into it; later runs reinstall only when
pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".aemp-install-stamp"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"aemp needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == want:
        return
    if not PY.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing aemp and its test tools into .venv", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(want)


# What `dev.py test` runs before the tests, in order: lint, format, the
# package's types, and every example in eg/ (with the API's type promises,
# tests/types_probe.py) under mypy --strict, as a user's code would be.
CHECKS: list[list[str]] = [
    ["-m", "ruff", "check", "."],
    ["-m", "ruff", "format", "--check", "."],
    ["-m", "mypy"],
    ["-m", "mypy", "--strict", "eg", "tests/types_probe.py"],
]


def run(*cmd: str) -> int:
    print("dev.py: $", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "help"
    if what == "setup":
        ensure_venv()
        print(f"dev.py: {VENV} is ready; activate it with: . {VENV / 'bin' / 'activate'}")
        return 0
    if what == "demo":
        ensure_venv()
        return run(str(PY), "eg/demo.py", *argv[1:])
    if what == "test":
        ensure_venv()
        for step in CHECKS:
            if rc := run(str(PY), *step):
                return rc
        return run(str(PY), "-m", "pytest", *argv[1:])
    if what == "bench":
        ensure_venv()
        return run(str(PY), "bench/run.py", *argv[1:])
    print(__doc__.strip())
    print("\n  setup  make .venv with aemp and its test tools installed, nothing else")
    print("  demo   run the demonstration: a network of processes, with a transcript")
    print("  test   lint, type-check and run the whole test suite")
    print("  bench  run the benchmarks (bench/run.py; add names to pick some)")
    return 0 if what in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
