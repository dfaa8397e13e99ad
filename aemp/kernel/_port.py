# A local port's state, shared by the node kernel and the calls it makes.

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handles import Monitor

Callback = Callable[..., Any]

# gates: why a port's messages wait (None: they don't)
BUSY = "busy"  # an async callback or a spawn init is running
DEAD = "dead"  # the port was killed
SYS = "sys"  # the pseudo-port that runs node-internal calls in FIFO order
NET = "net"  # the pseudo-port of packets read from a link, waiting behind the queue

RESUME = ("resume",)  # queued for a BUSY port when its async callback ended


class Port:
    __slots__ = ("backlog", "default", "gate", "id", "monitors", "tags", "task", "watchers")

    def __init__(self, pid: str) -> None:
        self.id = pid
        self.default: Callback | None = None
        self.tags: dict[str, Callback] | None = None
        self.gate: str | None = None
        self.backlog: deque[tuple[Any, ...]] | None = None
        self.task: asyncio.Future[Any] | None = None
        self.monitors: dict[Monitor, None] | None = None
        self.watchers: set[str] | None = None  # other nodes monitoring this port
