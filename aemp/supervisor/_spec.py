# aemp.supervisor's plain parts: child specs (Child), what a supervisor
# says about a child (ChildInfo) and what happened (Event), its errors, and
# the limits. No I/O here; the Supervisor is in _supervisor.py.
#
# May import the leaves (aemp._errors, aemp._message, aemp._targets).

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aemp._errors import AempError
from aemp._message import check_message
from aemp._targets import parse_spawn_target

RESTARTS = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
MAX_CHILDREN = 10_000  # children of one supervisor: every event walks them
MAX_HOSTS = 10_000  # node IDs in a hosts list: every placement walks them
MAX_RESTARTS = 1_000_000  # a max_restarts above this is a mistake, not a policy


class InvalidSpec(AempError, ValueError):
    """A child spec or a supervisor option is not valid (the message says which)."""


class SupervisorExited(AempError, RuntimeError):
    """The supervisor exited while something waited for it; ``reason`` says why."""

    def __init__(self, port: str, reason: tuple[Any, ...]) -> None:
        self.port = port
        self.reason = tuple(reason)
        text = ", ".join(repr(r) for r in self.reason) if self.reason else "normal exit"
        super().__init__(f"supervisor {port!r} exited: {text}")


@dataclass(frozen=True)
class Child:
    """A child spec: spawn ``target(*args)``; ``restart`` says when to start it again."""

    id: str
    target: str
    args: tuple[Any, ...] = ()
    restart: str = "permanent"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidSpec(f"Child: id must be a non-empty str (got {self.id!r})")
        parse_spawn_target(self.target)  # SpawnError names the target and the form
        if not isinstance(self.args, list | tuple):
            raise InvalidSpec(
                f"Child {self.id!r}: args must be a tuple or list (got {type(self.args).__name__})"
            )
        object.__setattr__(self, "args", tuple(self.args))
        check_message((self.target, *self.args))  # MessageError: they travel to the host
        if self.restart not in RESTARTS:
            raise InvalidSpec(
                f"Child {self.id!r}: restart must be one of {', '.join(RESTARTS)} "
                f"(got {self.restart!r})"
            )

    def as_data(self) -> list[Any]:
        """The spec as plain data, [id, target, args, restart] (what supervise takes)."""
        return [self.id, self.target, list(self.args), self.restart]


@dataclass(frozen=True)
class ChildInfo:
    """What a supervisor says about one child (Supervisor.children())."""

    id: str
    state: str  # "running", "waiting", "stopped" (exited, not to restart), "failed"
    port: str | None  # its port while running
    node: str | None  # where it runs, or ran last
    restarts: int  # how often it was started again


@dataclass(frozen=True)
class Event:
    """One event of a supervisor: what happened to which child, where, why."""

    kind: str  # started exited restarted moved waiting refused failed gave_up stopped
    supervisor: str  # the supervisor's port
    child: str | None = None  # the child's id (None for gave_up, stopped)
    port: str | None = None  # the child's port (the new one for restarted, moved)
    node: str | None = None  # the node it runs (ran) on
    reason: tuple[Any, ...] = ()  # the exit reason (exited, refused, failed, gave_up, stopped)

    def __str__(self) -> str:
        what = f"supervisor {self.supervisor}: {self.kind}"
        if self.child is not None:
            what += f" {self.child}"
        if self.port is not None:
            what += f" as {self.port}"
        elif self.node is not None:
            what += f" on {self.node}"
        return what + (f" {self.reason!r}" if self.reason else "")
