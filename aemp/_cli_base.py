# What the parts of the aemp command share: the command table's entry, the
# session a command line runs in, and how arguments are read.
#
# A command line is parsed in full before anything happens. Editing
# commands then change an in-memory copy of the configuration file; the copy
# is checked and written once, at the end, so a mistake anywhere in the line
# leaves the file as it was. A final command (run, snd, cal, ...) takes the
# rest of the line and runs after the write.

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._config import check_document, check_value, load_file, save_file
from ._errors import AempError, ConfigError


class Usage(Exception):
    """The command line is wrong: one line on stderr, exit status 2."""


class Failure(Exception):
    """The command could not do its job: one line on stderr, exit status 1."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its arguments, its help and what it does.

    ``nargs`` is the exact number of arguments, or None for "the rest of
    the line" (then ``nmin``/``nmax`` bound it). ``edit`` commands change
    the session's copy of the file; a ``final`` command ends the line and
    returns the exit status.
    """

    name: str
    usage: str
    summary: str
    run: Callable[[Session, list[Any]], int | None]
    group: str
    text: str = ""
    nargs: int | None = 0
    nmin: int = 0
    nmax: int | None = None
    final: bool = False
    aliases: tuple[str, ...] = ()
    expects: str = ""  # what the first missing argument should have been
    timeout: bool = False  # takes --timeout SECONDS before its arguments
    numbers: bool = False  # arguments after the first that are JSON numbers are numbers
    # options of its own, such as "--json" or "--max N" (one that takes a
    # value names it); they may come before or after the arguments
    flags: tuple[str, ...] = ()


class Session:
    """One command line: the configuration file's copy and what to print."""

    def __init__(self, path: Path, timeout: float | None = None, verbose: int = 0) -> None:
        self.path = path
        self.timeout = timeout
        self.verbose = verbose
        self.target: str | None = None  # the profile being edited; None: the default section
        self.options: dict[str, str | bool] = {}  # the final command's own --options
        self.out: list[str] = []
        self._data: dict[str, Any] | None = None
        self._original: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            try:
                self._data = load_file(self.path)
            except ConfigError as e:
                raise Failure(f"{e} (the file was left as it is)") from None
            self._original = copy.deepcopy(self._data)
        return self._data

    def section(self) -> dict[str, Any]:
        """The part of the file being edited: a profile, or the default section."""
        if self.target is None:
            return self.data
        profiles: dict[str, Any] = self.data.setdefault("profile", {})
        section: dict[str, Any] = profiles.setdefault(self.target, {})
        return section

    def commit(self) -> None:
        """Check the edited copy and write it, if anything changed."""
        if self._data is None or self._data == self._original:
            return
        try:
            check_document(self._data, self.path)
        except AempError as e:
            raise Usage(f"{e}; nothing was written") from None
        try:
            save_file(self.path, self._data)
        except OSError as e:
            raise Failure(f"cannot write {self.path}: {e.strerror or e}; it was not changed") from e


_NUMBER_RE = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?\Z")
JSON_START = ("[", "{", '"')


def decode_arg(cmd: str, word: str) -> Any:
    """An argument starting with [, { or " is JSON; anything else a string."""
    if not word.startswith(JSON_START):
        return word
    try:
        return json.loads(word)
    except json.JSONDecodeError as e:
        shown = word if len(word) <= 40 else word[:37] + "..."
        raise Usage(
            f"{cmd}: argument {shown!r} is not valid JSON ({e.msg} at column {e.colno}); "
            'expected JSON, since it starts with [, { or "'
        ) from None


def decode_message_arg(cmd: str, word: str) -> Any:
    """As decode_arg, and a JSON number (2, -1.5, 1e3) is sent as a number."""
    if _NUMBER_RE.match(word):
        return json.loads(word)
    return decode_arg(cmd, word)


def to_json(value: Any, indent: int | None = None) -> str:
    """JSON text for a reply or a reason; bytes become text, lossless when UTF-8."""

    def default(v: Any) -> Any:
        if isinstance(v, bytes | bytearray):
            return bytes(v).decode("utf-8", "backslashreplace")
        if isinstance(v, tuple):
            return list(v)
        raise TypeError(f"{type(v).__name__} is not JSON")

    return json.dumps(value, default=default, ensure_ascii=False, indent=indent)


_NUMBERS = (
    "monitor_timeout",
    "connect_interval",
    "max_packet",
    "blocking_threads",
    "queue_limit",
    "send_buffer",
    "max_unsent",
    "stall_timeout",
    "handshake_timeout",
    "max_handshakes",
    "max_handshakes_per_address",
    "listen_backlog",
    "max_objects",
)
_FLAGS = ("nodelay", "secure", "norc", "force", "control")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def typed(key: str, value: Any) -> Any:
    """A command-line string as the key wants it: a number, true/false, a list."""
    if isinstance(value, str):
        if key == "services":
            return [x for x in value.split(",") if x]
        if key in _NUMBERS and _NUMBER_RE.match(value):
            return json.loads(value)
        if key in _FLAGS and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    return value


def checked(cmd: str, key: str, value: Any) -> Any:
    """The value in file form, or a Usage error naming the command."""
    try:
        return check_value(key, typed(key, value))
    except AempError as e:
        raise Usage(f"{cmd}: {e}") from None


def need_str(cmd: str, what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Usage(f"{cmd}: {what} must be a non-empty string (got {to_json(value)})")
    return value


@dataclasses.dataclass
class ConfigureArgs:
    """What `run` and `showconfig` pass on to configure()."""

    profile: str | None = None
    norc: bool = False
    force: bool = False
    keys: dict[str, Any] = dataclasses.field(default_factory=dict)


def configure_args(cmd: str, words: list[Any]) -> ConfigureArgs:
    """[PROFILE] [KEY VALUE ...]: an odd count means the first word is the profile."""
    out = ConfigureArgs()
    if len(words) % 2:
        out.profile = need_str(cmd, "the profile name", words[0])
        words = words[1:]
    for key, value in zip(words[::2], words[1::2], strict=True):
        if key == "profile":
            out.profile = need_str(cmd, "the profile name", value)
        elif key in ("norc", "force"):
            flag = typed(key, value)
            if not isinstance(flag, bool):
                raise Usage(f"{cmd}: {key} must be true or false (got {to_json(value)})")
            setattr(out, key, flag)
        elif isinstance(key, str):
            out.keys[key] = checked(cmd, key, value)
        else:
            raise Usage(f"{cmd}: expected a configuration key, got {to_json(key)}")
    return out
