# The pool's errors, the database family of a function, and the names the
# wire uses (docs/protocol.md, 8.1): what both sides of a pool share.
#
# A part of the capability aemp.pool: imports only the leaves.

from __future__ import annotations

import re
from typing import Any

from .._errors import AempError, CallTimeout, InvalidArgument, InvalidFamily

BUSY_TYPE = "aemp.pool.Busy"  # the type of the error reply that says "busy"
FAMILY_PREFIX = "fn:"  # a function's workers are in the database family fn:NAME


class NoWorkers(CallTimeout):
    """No worker offered the function within the timeout (pool.call or
    wait_for_workers). ``function`` names it; ``workers`` is how many were
    known."""

    def __init__(self, function: str, timeout: float, workers: int = 0, wanted: int = 1) -> None:
        self.port = family_of(function)
        self.timeout = timeout
        self.function = function
        self.workers = workers
        AempError.__init__(
            self,
            f"no worker offers {function!r} (database family {family_of(function)!r}) "
            f"within {timeout:g} s"
            if workers == 0
            else f"only {workers} of {wanted} workers offer {function!r} within {timeout:g} s",
        )


class AllBusy(CallTimeout):
    """Every worker of the function stayed busy (or benched after failures,
    or on a node that could not be reached) until the call's timeout."""

    def __init__(self, function: str, timeout: float, workers: int) -> None:
        self.port = family_of(function)
        self.timeout = timeout
        self.function = function
        self.workers = workers
        AempError.__init__(
            self,
            f"all {workers} workers of {function!r} stayed busy, failing or unreachable "
            f"for {timeout:g} s",
        )


class BadReply(AempError, ValueError):
    """A worker answered something that is not a pool reply ([value] or an
    error reply). ``worker`` is its port, ``reply`` what came (as a tuple)."""

    def __init__(self, function: str, worker: str, reply: tuple[Any, ...]) -> None:
        self.function = function
        self.worker = worker
        self.reply = reply
        AempError.__init__(
            self,
            f"worker {worker!r} of {function!r} answered {len(reply)} values, "
            f"not one: {reply!r:.120}",
        )


class PoolClosed(AempError, RuntimeError):
    """The pool was closed (pool.close(), or its node closed)."""


def family_of(function: str) -> str:
    """The database family in which the workers of `function` register."""
    return FAMILY_PREFIX + function


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_:.]*\Z")  # a family name's rule (docs/api.md)


def check_name(name: object) -> str:
    if type(name) is not str:
        raise InvalidArgument(
            f"a function name must be a str (got {name!r:.60}, a {type(name).__name__})"
        )
    if not _NAME.match(name):
        raise InvalidFamily(
            f"function name {name!r:.60} is not valid: names match [A-Za-z][A-Za-z0-9_:.]* "
            "(the workers register in the database family fn:NAME)"
        )
    return name
