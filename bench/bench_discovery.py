"""Discovery benchmark: from start to a full mesh of three network namespaces.

    sudo PYTHONPATH=$PWD python bench/bench_discovery.py [--rounds 5]

Needs root: it makes a bridge namespace and three node namespaces joined
to it by veth pairs (as tests/test_discovery_netns.py does; multicast
never leaves them) and deletes them at the end, also after a failure.
Each round starts three node processes (tests/disc_proc.py) at once and
measures, from the start of the processes, how long until every one is
connected to the two others and sees all three in the database. aemp
with `discovery` and no seeds, next to the reference measured in the
same run: the same three processes with `seeds` naming each other (what
one would configure without discovery). The processes announce every
second (interval=1; the default is 5). Prints one JSON line, with the
medians. Not part of bench/run.py (root only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROC = ROOT / "tests" / "disc_proc.py"
PREFIX = f"aempb{os.getpid() % 100000}"
GROUP, PORT = "239.255.65.77", 4044
LIMIT_S = 30.0  # per round


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def setup() -> None:
    lan = f"{PREFIX}-lan"
    ip("netns", "add", lan)
    ip("-n", lan, "link", "add", "br0", "type", "bridge")
    ip("-n", lan, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
    ip("-n", lan, "link", "set", "br0", "up")
    for i in (1, 2, 3):
        ns = f"{PREFIX}-n{i}"
        ip("netns", "add", ns)
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", lan)
        ip("-n", lan, "link", "set", f"v{i}", "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")


def teardown() -> None:
    for name in [f"{PREFIX}-lan", *(f"{PREFIX}-n{i}" for i in (1, 2, 3))]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def keys(i: int, discovery: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "nodeid": f"n{i}",
        "binds": [f"10.77.0.{i}:4040"],
        "secret": "bench-discovery",
        "network": "bench",
        "monitor_timeout": 2,
    }
    if discovery:
        out["discovery"] = [f"multicast:{GROUP}:{PORT};interface=eth0;interval=1"]
    else:
        out["seeds"] = [f"10.77.0.{j}:4040" for j in (1, 2, 3) if j != i]
    return out


def one_round(discovery: bool) -> float:
    """Seconds from starting three processes until each sees the full mesh."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                f"{PREFIX}-n{i}",
                sys.executable,
                str(PROC),
                json.dumps(keys(i, discovery)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (1, 2, 3)
    ]
    ids = ["n1", "n2", "n3"]
    # a process that never gets there is killed: its stdout ends, and so does the wait
    watchdog = threading.Timer(LIMIT_S, lambda: [p.kill() for p in procs])
    watchdog.start()
    try:
        done: dict[int, float] = {}
        for i, proc in enumerate(procs, 1):
            assert proc.stdout is not None
            for line in proc.stdout:  # bounded: the process is killed after LIMIT_S
                state = json.loads(line)
                if state["up"] == [n for n in ids if n != f"n{i}"] and state["db"] == ids:
                    done[i] = time.monotonic() - start
                    break
            else:
                raise TimeoutError(f"n{i}: no full mesh after {LIMIT_S} s")
        return max(done.values())
    finally:
        watchdog.cancel()
        for proc in procs:  # by PID: these processes are ours
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_discovery needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        setup()
        found = [one_round(True) for _ in range(args.rounds)]
        seeded = [one_round(False) for _ in range(args.rounds)]
    finally:
        teardown()
    value, ref = statistics.median(found), statistics.median(seeded)
    print(json.dumps({
        "bench": "discovery_mesh_3_namespaces",
        "value": round(value, 3),
        "unit": "s from process start to a full mesh and database, median (lower is better)",
        "rounds": [round(x, 3) for x in found],
        "reference": "the same three processes with seeds naming each other, no discovery",
        "reference_value": round(ref, 3),
        "reference_rounds": [round(x, 3) for x in seeded],
        "ratio": round(ref / value, 3),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
