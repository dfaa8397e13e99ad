# What the benchmarks share: a free port on 127.0.0.1, a peer process
# that reports itself in one JSON line and serves until its stdin closes,
# and the result line of a figure next to its reference.
#
# The benchmarks import it as `_common`: run.py puts bench/ on sys.path,
# and a benchmark run as a script has its own folder there.

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = ["Peer", "figure", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing was bound to at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """A process ``python SCRIPT ARGS...`` that prints one JSON object on its
    first line (`info`) and serves until its stdin closes.

    With `cpus`, the process runs only on those CPUs.
    """

    def __init__(self, script: Path | str, *args: str, cpus: Collection[int] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        assert self.proc.stdout is not None
        self.info: dict[str, Any] = json.loads(self.proc.stdout.readline())

    def kill9(self) -> None:
        """Kill the process with SIGKILL and wait for its end."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """End the process: close its stdin, and kill it if it has not ended 10 s later."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def figure(
    name: str,
    value: float,
    unit: str,
    reference: str,
    reference_value: float,
    *,
    ratio: float | None = None,
    digits: int | None = None,
) -> dict[str, Any]:
    """One benchmark figure next to its reference, as a result line's fields.

    The ratio, unless given, is value / reference_value, or its inverse
    where the unit says "lower" (is better): above 1 means aemp does better.
    Value and reference_value are rounded to `digits` places, or by default
    to 2 places below 1,000 and to whole numbers from there; the ratio to 3.
    """
    if ratio is None:
        ratio = (reference_value / value) if "lower" in unit else (value / reference_value)
    return {
        "bench": name,
        "value": _round(value, digits),
        "unit": unit,
        "reference": reference,
        "reference_value": _round(reference_value, digits),
        "ratio": round(ratio, 3),
    }


def _round(x: float, digits: int | None) -> float:
    if digits is not None:
        return round(x, digits)
    return round(x, 2) if x < 1000 else round(x)
