"""The README quickstart's demo and the README's examples run as documented.

The demo starts real processes (a seed and three workers); these tests
read its transcript, check that every process it named is gone once it
exits, also when it is interrupted with SIGINT as Ctrl-C would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "eg" / "demo.py"
STARTED = re.compile(r"started (\S+) as process (\d+)$", re.M)


def running(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def started(out: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in STARTED.findall(out)}


def line(out: str, pattern: str) -> re.Match[str]:
    """The first transcript line (without its timestamp) that matches pattern."""
    m = re.search(r"^\[ *\d+\.\d{3}s\] " + pattern + "$", out, re.M)
    assert m, f"no line matching {pattern!r} in the demo output:\n{out}"
    return m


def same_shape(text: str) -> list[str]:
    """Transcript lines with what differs between runs (times, IDs, PIDs, ports) blanked."""
    text = re.sub(r"^\[ *\d+\.\d{3}s\] ", "", text, flags=re.M)
    text = re.sub(r"#\w+", "#ID", text)
    text = re.sub(r"(process |'pid': |127\.0\.0\.1:)\d+", r"\1N", text)
    return text.splitlines()


def test_demo_transcript() -> None:
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, check=False
    )
    took = time.monotonic() - t0
    out = done.stdout
    assert done.returncode == 0, f"demo failed ({done.returncode}):\n{out}\n{done.stderr}"
    assert took < 10, f"the demo took {took:.1f} s"

    pids = started(out)
    assert sorted(pids) == ["seed", "worker-1", "worker-2", "worker-3"]
    assert len(set(pids.values())) == 4
    demo_pid = int(line(out, r"this demo is process (\d+); .*")[1])
    assert demo_pid not in pids.values()

    # 1. the workers register, and db_mon shows each one arriving
    line(out, r"node demo joined through the seed \(seed\)")
    line(out, r"db_mon: 'workers' now holds nobody")
    reg = {}
    for name, pid in pids.items():
        if name != "seed":
            m = line(out, rf"db_mon: ({name}#\w+) joined 'workers' with {{'pid': {pid}}}")
            reg[name] = m[1]
    line(out, r"db_mon: 'workers' now holds worker-1, worker-2, worker-3")

    # 2. cal reaches each worker's process
    for name, port in reg.items():
        line(out, rf"cal\({port}, 'whoami'\) -> {name}, process {pids[name]}")

    # 3. spawn on worker-1; the port runs there; its death fires the monitor
    squarer = line(out, r"spawn\('worker-1', 'workers:squarer'\) -> (worker-1#\w+)")[1]
    line(out, rf"    \(worker-1 prints: started squarer as port {squarer}\)")
    line(out, rf"cal square\(12\) -> 144, computed by squarer in process {pids['worker-1']}")
    why = r"\('die', 'ValueError: squarer refuses negative numbers like -1'\)"
    line(out, rf"monitor on {squarer} fired: {why}")

    # 4. kill -9 the job's worker: transport_error, the entry goes, the job moves
    line(out, rf"cal square\(7\) -> 49, computed by job-1 in process {pids['worker-1']}")
    line(out, rf"SIGKILL worker-1 \(process {pids['worker-1']}\)")
    line(out, r"supervisor: monitor fired, the job died with \('transport_error', 'worker-1', .*\)")
    line(out, rf"db_mon: {reg['worker-1']} left 'workers'")
    line(out, r"db_mon: 'workers' now holds worker-2, worker-3")
    line(out, r"supervisor: job running as worker-2#\w+")
    line(out, rf"cal square\(8\) -> 64, computed by job-2 in process {pids['worker-2']}")
    line(out, r"supervisor: the job exited normally, not restarting it")

    # every process stopped by the demo itself
    line(out, rf"process {pids['worker-1']} \(worker-1\) is gone: SIGKILL")
    for name in ("seed", "worker-2", "worker-3"):
        line(out, rf"process {pids[name]} \({name}\) is gone: exit status 0")
    assert not [pid for pid in pids.values() if running(pid)]

    # the abridged transcript in README.md is what the demo prints
    readme = (ROOT / "README.md").read_text()
    excerpt = readme.split("\n```text\n", 1)[1].split("```", 1)[0]
    shown = [ln for ln in same_shape(excerpt) if ln != "..."]
    assert len(shown) > 10
    missing = set(shown) - set(same_shape(out))
    assert not missing, f"README's demo transcript has lines the demo no longer prints: {missing}"


async def test_demo_interrupted_stops_every_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DEMO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    out = ""
    try:
        async with asyncio.timeout(20):
            while "joined 'workers'" not in out:
                got = await proc.stdout.readline()
                assert got, f"the demo ended before any worker joined:\n{out}"
                out += got.decode()
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out += rest.decode()
    assert proc.returncode == 130, f"exit status {proc.returncode}:\n{out}\n{err.decode()}"
    pids = started(out)
    assert len(pids) >= 2
    for name, pid in pids.items():
        line(out, rf"process {pid} \({name}\) is gone: .*")
    assert not [pid for pid in pids.values() if running(pid)]
    line(out, r"interrupted; every process the demo started was stopped")


def test_readme_python_blocks_run() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks, "README.md has no python example"
    for code in blocks:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert out.splitlines() == ["5", "adder died: ('retired',)"]
