"""docs/cli.md: its console transcripts run as shown, its file example is valid."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from test_cli import Lines, env, free_port

from aemp._cli import _table
from aemp._config import check_document, config_path

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


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


def test_console_transcripts_run_as_shown() -> None:
    port = str(free_port())
    background: subprocess.Popen[bytes] | None = None
    ran = 0
    try:
        for block in blocks("console"):
            for command, expected in steps(block.replace("4040", port)):
                words = shlex.split(command)
                if words == ["kill", "%1"]:
                    assert background is not None
                    background.send_signal(signal.SIGTERM)
                    rc = background.wait(timeout=20)
                    assert background.stderr is not None
                    background.stderr.close()
                    background = None
                    assert rc == 0
                    continue
                assert words[0] == "aemp", command
                if words[-1] == "&":
                    assert background is None
                    background = subprocess.Popen(
                        [sys.executable, "-m", "aemp", *words[1:-1]],
                        stderr=subprocess.PIPE,
                        env=env(),
                    )
                    assert background.stderr is not None
                    line = Lines(background.stderr).wait_for(" is up, listening on ")
                    assert all(matches(e, line.rstrip("\n")) for e in expected), line
                    continue
                r = subprocess.run(
                    [sys.executable, "-m", "aemp", *words[1:]],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=env(),
                )
                ran += 1
                got = (r.stdout + r.stderr).splitlines()
                failing = any(e.startswith("aemp: ") for e in expected)
                assert (r.returncode != 0) == failing, f"{command}: {r.stderr}"
                assert len(got) == len(expected), f"{command}:\n{r.stdout}{r.stderr}"
                for e, g in zip(expected, got, strict=True):
                    assert matches(e, g), f"{command}: expected {e!r}, got {g!r}"
    finally:
        if background is not None:
            if background.poll() is None:
                background.kill()
            background.wait(timeout=20)
            assert background.stderr is not None
            background.stderr.close()
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
