# What a forwarded log record is (LogEntry, as plain data on the wire), the
# families and limits the forwarders and catchers share, and their filter:
# a level and logger names (a name takes its children too). See the
# package's docstring for how the parts work together.

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from aemp._errors import InvalidArgument, OutOfRange

log = logging.getLogger("aemp.logcatch")  # the forwarding path's own: never forwarded

CATCHERS = "aemp.logcatch"  # db family: catcher port -> {"level": int, "loggers": [str]}
FORWARDERS = "aemp.logsend"  # db family: forwarder port -> None
DEFAULT_BUFFER = 1000  # records a forwarder keeps while no catcher is reachable
DEFAULT_QUEUE = 10_000  # records a catcher keeps for its iterator
MAX_TEXT = 32 * 1024  # characters of a message or exception text that are sent
MAX_CATCHERS = 64  # catchers one forwarder sends to; more are ignored
MAX_LOGGERS = 64  # logger names in one catcher's filter


def parse_level(level: Any) -> int:
    """A logging level: an int >= 0, or a name such as "INFO" or "warning"."""
    if isinstance(level, str):
        text = level.strip()
        if text.isdigit():
            return int(text)
        value = logging.getLevelName(text.upper())
        if isinstance(value, int):
            return value
        raise InvalidArgument(
            f"level must be a logging level such as DEBUG, INFO, WARNING, ERROR or a number "
            f"(got {level!r})"
        )
    if type(level) is not int:
        raise InvalidArgument(f"level must be an int or a level name (got {level!r})")
    if level < 0:
        raise OutOfRange(f"level must be >= 0 (got {level})")
    return level


def check_loggers(loggers: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(loggers, str):
        loggers = (loggers,)
    out = tuple(loggers)
    for name in out:
        if not isinstance(name, str):
            raise InvalidArgument(f"loggers must be logger names (got {name!r})")
    if len(out) > MAX_LOGGERS:
        raise OutOfRange(f"loggers: at most {MAX_LOGGERS} names (got {len(out)})")
    return out


def wants(level: int, loggers: tuple[str, ...], rec_level: int, name: str) -> bool:
    """Whether a filter (level, logger names; none: all) takes a record."""
    if rec_level < level:
        return False
    if not loggers:
        return True
    return any(not p or name == p or name.startswith(p + ".") for p in loggers)


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... ({len(text)} characters)"


@dataclasses.dataclass(frozen=True, slots=True)
class LogEntry:
    """One log record of some node, as a catcher gets it."""

    node: str  # the node ID that logged it
    time: float  # when, in seconds since the epoch (that node's clock)
    level: int  # logging.WARNING and friends
    logger: str  # the logger's name
    message: str  # the formatted message
    exc: str | None = None  # the exception's traceback text, if any

    @property
    def levelname(self) -> str:
        return logging.getLevelName(self.level)

    def format(self) -> str:
        """One line as ``aemp log`` prints it (and the exception text after it)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        ms = int(self.time % 1 * 1000)
        line = f"{stamp}.{ms:03d} {self.node} {self.levelname} {self.logger}: {self.message}"
        return line if self.exc is None else f"{line}\n{self.exc}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, data: Any) -> LogEntry | None:
        """The entry a forwarded dict describes; None if it is no log record."""
        if type(data) is not dict:
            return None
        node, when, level = data.get("node"), data.get("time"), data.get("level")
        logger, message, exc = data.get("logger"), data.get("message"), data.get("exc")
        if not (type(node) is str and type(logger) is str and type(message) is str):
            return None
        if type(level) is not int or not 0 <= level <= 1000:
            return None
        if not isinstance(when, int | float) or isinstance(when, bool) or not math.isfinite(when):
            return None
        if exc is not None and type(exc) is not str:
            return None
        return cls(node, float(when), level, logger, message, exc)
