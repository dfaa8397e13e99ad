# The context variables: which port's callback is running (SELF) and
# which node is delivering (CURRENT). The process-node registry and run()
# are in aemp/_current.py.

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

SELF: ContextVar[str | None] = ContextVar("aemp.SELF", default=None)
"""The port ID whose callback is running, or None outside any port."""

CURRENT: ContextVar[Any] = ContextVar("aemp.node", default=None)
"""The node (an aemp.Node) delivering to the running callback, or None."""
