# The aemp command: parses the command line and runs its commands.
#
# Subcommands chain, as in `aemp profile seed binds '*:4040' gensecret`, so
# argparse, which wants one subcommand, does not fit: each command declares
# how many arguments it takes in a table (_cli_edit, _cli_net), and the
# line is cut into commands by that table before anything runs. Mistakes
# in the line are one line on stderr and exit status 2; a command that
# could not do its job says why in one line and exits with 1.

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any

from ._cli_base import Command, Failure, Session, Usage, decode_arg, decode_message_arg
from ._config import config_path

_GLOBAL_OPTIONS = "--help, --version, --verbose (-v, twice for more) or --timeout SECONDS"


def _table() -> tuple[list[Command], dict[str, Command]]:
    from . import _cli_edit, _cli_inspect, _cli_local, _cli_log, _cli_names, _cli_net

    commands = [
        *_cli_edit.COMMANDS,
        *_cli_net.COMMANDS,
        *_cli_inspect.COMMANDS,
        *_cli_log.COMMANDS,
        *_cli_local.COMMANDS,
        *_cli_names.COMMANDS,
        *_OTHER,
    ]
    by_name: dict[str, Command] = {}
    for cmd in commands:
        for name in (cmd.name, *cmd.aliases):
            if name in by_name:  # pragma: no cover - a mistake in the tables
                raise RuntimeError(f"aemp command {name!r} is defined twice")
            by_name[name] = cmd
    return commands, by_name


# ---------------------------------------------------------------- help


def _help_cmd(s: Session, args: list[Any]) -> int:
    commands, by_name = _table()
    if not args:
        print(overview(commands))
        return 0
    topic = args[0]
    cmd = by_name.get(topic) if isinstance(topic, str) else None
    if cmd is None:
        raise Usage(
            f"help: unknown command {topic!r}: expected one of the commands in 'aemp --help'"
        )
    print(command_help(cmd))
    return 0


def _version_cmd(s: Session, args: list[Any]) -> int:
    from ._version import __version__

    print(f"aemp {__version__}")
    return 0


_OTHER = [
    Command(
        "help",
        "[COMMAND]",
        "explain a command, or list them all",
        _help_cmd,
        "other",
        nargs=None,
        nmax=1,
        final=True,
    ),
    Command(
        "version",
        "",
        "print the version of aemp",
        _version_cmd,
        "other",
        nargs=None,
        nmax=0,
        final=True,
    ),
]


def _flags(cmd: Command) -> str:
    return "".join(f" [{f}]" for f in cmd.flags)


def _spelled(cmd: Command) -> str:
    names = ", ".join((cmd.name, *cmd.aliases))
    return f"{names}{_flags(cmd)} {cmd.usage}".rstrip()


def command_help(cmd: Command) -> str:
    option = (" [--timeout SECONDS]" if cmd.timeout else "") + _flags(cmd)
    lines = [f"usage: aemp {cmd.name}{option} {cmd.usage}".rstrip(), "", cmd.summary + "."]
    if cmd.text:
        lines += ["", *textwrap.wrap(cmd.text, 78)]
    if cmd.aliases:
        lines += ["", "Also spelled: " + ", ".join(cmd.aliases) + "."]
    if cmd.expects:
        lines += ["", f"{cmd.usage.split()[0]}: {cmd.expects}."]
    return "\n".join(lines)


def overview(commands: list[Command]) -> str:
    out = [
        "usage: aemp [--verbose] [--timeout SECONDS] COMMAND [ARGS] [COMMAND [ARGS] ...]",
        "",
        "aemp edits the configuration file of aemp nodes, runs nodes and talks to them.",
        "Commands chain: 'aemp profile seed binds 127.0.0.1:4040 gensecret' edits profile",
        'seed and writes the file once, at the end. An argument that starts with [, { or "',
        "is read as JSON; every setX command is also spelled X.",
    ]
    groups: dict[str, list[Command]] = {}
    for cmd in commands:
        groups.setdefault(cmd.group, []).append(cmd)
    for group, cmds in groups.items():
        out += ["", group + ":"]
        for cmd in cmds:
            spelled = _spelled(cmd)
            summary = textwrap.wrap(cmd.summary, 99 - 33)
            if len(spelled) > 30:
                out.append(f"  {spelled}")
                spelled = ""
            out.append(f"  {spelled:<30} {summary[0]}")
            out += [" " * 33 + line for line in summary[1:]]
    out += [
        "",
        "options (before the first command):",
        "  --timeout SECONDS              how long snd, cal and mon wait (default 5)",
        "  -v, --verbose                  log more on stderr (twice: debug)",
        "  --version                      print the version",
        "",
        "configuration file: $AEMP_CONFIG, else ~/.config/aemp/config.json",
        f"(here: {config_path()})",
        "exit status: 0 done, 1 failed (one line on stderr), 2 mistake in the command line",
        "(one line on stderr; the file is left as it was; 'aemp' alone prints this on stderr).",
        "Options go before or after a command's arguments; '--' ends them.",
        "'aemp help COMMAND' explains one command; docs/cli.md has examples.",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- parsing


def _timeout(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        t = -1.0
    if not 0 < t < float("inf"):
        raise Usage(f"--timeout must be a positive number of seconds (got {value!r})")
    return t


def _options(argv: list[str], s: Session) -> tuple[list[str], str | None]:
    """Leading options; returns the remaining words and --help/--version if given."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        a = argv[i]
        i += 1
        if a in ("-h", "--help"):
            return [], "help"
        if a == "--version":
            return [], "version"
        if a in ("-v", "--verbose"):
            s.verbose += 1
        elif a == "-vv":
            s.verbose += 2
        elif a == "--timeout":
            if i == len(argv):
                raise Usage("--timeout needs SECONDS: expected a positive number")
            s.timeout = _timeout(argv[i])
            i += 1
        elif a.startswith("--timeout="):
            s.timeout = _timeout(a.partition("=")[2])
        elif a == "--":
            break
        else:
            raise Usage(f"unknown option {a!r}: expected {_GLOBAL_OPTIONS}")
    return argv[i:], None


def parse(words: list[str], s: Session) -> list[tuple[Command, list[Any]]]:
    """Cut the line into commands and their (JSON-decoded) arguments."""
    _, by_name = _table()
    plan: list[tuple[Command, list[Any]]] = []
    i = 0
    while i < len(words):
        name = words[i]
        cmd = by_name.get(name)
        if cmd is None:
            raise Usage(
                f"unknown command {name!r}: expected a command such as profile, setseeds, "
                "run or cal (see 'aemp --help')"
            )
        i += 1
        if words[i : i + 1] in (["--help"], ["-h"]):
            return [(by_name["help"], [cmd.name])]
        if cmd.nargs is None:
            rest = words[i:]
            i = len(words)
            if cmd.flags or cmd.timeout:
                rest = _command_options(cmd, rest, s)
            if len(rest) < cmd.nmin:
                raise _missing(cmd, rest)
            if cmd.nmax is not None and len(rest) > cmd.nmax:
                usage = f"aemp {name} {cmd.usage}".rstrip()
                raise Usage(f"{name}: too many arguments ({len(rest)}): expected '{usage}'")
        else:
            rest = words[i : i + cmd.nargs]
            i += cmd.nargs
            if len(rest) < cmd.nargs:
                raise _missing(cmd, rest)
        if cmd.numbers:
            args = [
                decode_arg(name, w) if k == 0 else decode_message_arg(name, w)
                for k, w in enumerate(rest)
            ]
        else:
            args = [decode_arg(name, w) for w in rest]
        plan.append((cmd, args))
    return plan


def _command_options(cmd: Command, rest: list[str], s: Session) -> list[str]:
    """Take the command's own options (and --verbose), before or after its
    arguments; '--' ends them."""
    spec = {f.split()[0]: len(f.split()) > 1 for f in cmd.flags}
    if cmd.timeout:
        spec["--timeout"] = True
    words: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        i += 1
        if a == "--":
            words += rest[i:]
            break
        if a in ("-v", "--verbose", "-vv"):  # the global option, here too
            s.verbose += 2 if a == "-vv" else 1
            continue
        if not a.startswith("--"):
            words.append(a)
            continue
        name, eq, value = a.partition("=")
        if name not in spec:
            known = " or ".join([*cmd.flags, *(["--timeout SECONDS"] if cmd.timeout else [])])
            raise Usage(f"{cmd.name}: unknown option {a!r}: expected {known}")
        if not spec[name]:
            if eq:
                raise Usage(f"{cmd.name}: option {name} takes no value (got {a!r})")
            s.options[name] = True
            continue
        if not eq:
            if i == len(rest):
                wanted = next((f for f in cmd.flags if f.split()[0] == name), name + " SECONDS")
                raise Usage(f"{cmd.name}: {name} needs a value: expected '{wanted}'")
            value = rest[i]
            i += 1
        if name == "--timeout":
            s.timeout = _timeout(value)
        else:
            s.options[name] = value
    return words


def _missing(cmd: Command, got: list[str]) -> Usage:
    wanted = cmd.usage.split()[len(got)] if cmd.usage else "an argument"
    expects = f" ({cmd.expects})" if cmd.expects and not got else ""
    usage = f"aemp {cmd.name} {cmd.usage}"
    return Usage(f"{cmd.name}: missing {wanted.strip('[].')}{expects}: expected '{usage}'")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run one aemp command line; returns the exit status."""
    s = Session(config_path())
    try:
        words, special = _options(list(sys.argv[1:] if argv is None else argv), s)
        if special == "version":
            return _version_cmd(s, [])
        if special == "help":
            return _help_cmd(s, [])
        if not words:  # a mistake in the line, as for git or argparse: help on stderr
            print(overview(_table()[0]), file=sys.stderr)
            return 2
        plan = parse(words, s)
        final: tuple[Command, list[Any]] | None = None
        for cmd, args in plan:
            if cmd.final:
                final = (cmd, args)
            else:
                cmd.run(s, args)
        s.commit()
        for line in s.out:
            print(line)
        if final is not None:
            return final[0].run(s, final[1]) or 0
        return 0
    except Usage as e:
        print(f"aemp: {e}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"aemp: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away, as in `aemp --help | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit flush cannot fail too
        return 128 + 13  # as if killed by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
