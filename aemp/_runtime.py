# The context variables: which port's callback is running (SELF) and
# which node is delivering (CURRENT), self_port(), and the types of the
# callbacks mon and db_mon call. The process-node registry and run() are
# in aemp/_current.py.

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from ._errors import NoCurrentPort

SELF: ContextVar[str | None] = ContextVar("aemp.SELF", default=None)
"""The port ID whose callback is running, or None outside any port."""

CURRENT: ContextVar[Any] = ContextVar("aemp.node", default=None)
"""The node (an aemp.Node) delivering to the running callback, or None."""


def self_port() -> str:
    """The ID of the port whose callback is running: SELF.get(), typed str.

    Raises NoCurrentPort outside a port's context (in plain async code, or
    a thread), where SELF.get() gives None.
    """
    port = SELF.get()
    if port is None:
        raise NoCurrentPort(
            "self_port() called outside any port's context: it works in a port's callbacks, "
            "a spawned function and what psub or peval run"
        )
    return port


class MonCallback(Protocol):
    """What ``mon(port, cb)`` calls once the port dies: ``cb(*reason)``.

    The reason is empty for a normal exit, else the kill reason, such as
    ``("transport_error", nodeid, why)``. What it returns is ignored; a
    coroutine is run as a task of the node.
    """

    def __call__(self, *reason: Any) -> object: ...


class DbMonCallback(Protocol):
    """What ``db_mon(family, cb)`` calls: first with the whole family, then per change.

    ``family`` is a read-only live view ``{subkey: value}``; ``added``,
    ``changed`` and ``deleted`` list subkeys. What it returns is ignored;
    a coroutine is run as a task of the node.
    """

    def __call__(
        self,
        family: Mapping[str, Any],
        added: list[str],
        changed: list[str],
        deleted: list[str],
        /,
    ) -> object: ...
