"""docs/cli.md: its console transcripts run as shown, its file example is valid."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_cli import Lines, env, free_port

from aemp._cli import _table
from aemp._config import check_document, config_path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
EG = ROOT / "eg"


def blocks(kind: str) -> list[str]:
    text = DOC.read_text()
    return [b.split("\n```", 1)[0] for b in text.split(f"```{kind}\n")[1:]]


def matches(expected: str, got: str) -> bool:
    """'...' in an expected line stands for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, got) is not None


def steps(block: str) -> list[tuple[str, list[str]]]:
    """($ command, expected output lines) pairs."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"output before any command in:\n{block}"
            out[-1][1].append(line)
    return out


def doc_env() -> dict[str, str]:
    """The tests' environment, with eg/ on PYTHONPATH for the page's example service."""
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(EG), e["PYTHONPATH"]])
    return e


def start_job(words: list[str], expected: list[str]) -> subprocess.Popen[bytes]:
    """`aemp ... &`: wait until its log shows every expected line, in any order."""
    job = subprocess.Popen(
        [sys.executable, "-m", "aemp", *words], stderr=subprocess.PIPE, env=doc_env()
    )
    assert job.stderr is not None
    log = Lines(job.stderr)
    waiting = list(expected)
    deadline = time.monotonic() + 20
    while waiting:
        left = deadline - time.monotonic()
        assert left > 0, f"{' '.join(words)}: no line like {waiting} in {log.seen}"
        line = log.wait_for("", left).rstrip("\n")
        waiting = [e for e in waiting if not matches(e, line)]
    return job


def stop_job(job: subprocess.Popen[bytes], sig: int) -> int:
    if job.poll() is None:
        job.send_signal(sig)
    rc = job.wait(timeout=20)
    assert job.stderr is not None
    job.stderr.close()
    return rc


def test_console_transcripts_run_as_shown() -> None:
    port = str(free_port())
    jobs: dict[int, subprocess.Popen[bytes]] = {}  # numbered as a shell numbers them
    ran = 0
    try:
        for block in blocks("console"):
            for command, expected in steps(block.replace("4040", port)):
                words = shlex.split(command)
                if words[0] == "kill":
                    assert words[1].startswith("%"), command
                    assert stop_job(jobs.pop(int(words[1][1:])), signal.SIGTERM) == 0
                    continue
                if words[0] == "wait":  # a job that ends by itself (aemp stop)
                    assert words[1].startswith("%"), command
                    job = jobs.pop(int(words[1][1:]))
                    assert job.wait(timeout=20) == 0 and stop_job(job, signal.SIGTERM) == 0
                    continue
                assert words[0] == "aemp", command
                if words[-1] == "&":
                    jobs[max(jobs, default=0) + 1] = start_job(words[1:-1], expected)
                    continue
                r = subprocess.run(
                    [sys.executable, "-m", "aemp", *words[1:]],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=doc_env(),
                )
                ran += 1
                got = (r.stdout + r.stderr).splitlines()
                failing = any(e.startswith("aemp: ") for e in expected)
                assert (r.returncode != 0) == failing, f"{command}: {r.stderr}"
                assert len(got) == len(expected), f"{command}:\n{r.stdout}{r.stderr}"
                for e, g in zip(expected, got, strict=True):
                    assert matches(e, g), f"{command}: expected {e!r}, got {g!r}"
    finally:
        for job in jobs.values():
            stop_job(job, signal.SIGKILL)
    assert not jobs, f"jobs left running at the end of the page: {sorted(jobs)}"
    assert ran >= 10
    assert os.stat(config_path()).st_mode & 0o777 == 0o600


def test_file_example_is_valid() -> None:
    (example,) = blocks("json")
    check_document(json.loads(example), "docs/cli.md")


def test_every_command_is_named_in_the_help_the_page_points_to() -> None:
    text = DOC.read_text()
    assert "aemp --help" in text and "aemp help COMMAND" in text
    commands, _ = _table()
    for cmd in commands:
        if cmd.group == "running nodes and talking to them":
            assert f"`{cmd.name} " in text or f"aemp {cmd.name}" in text, cmd.name
