# A supervisor as a child: the spawn target supervise, which makes the
# spawned port a Supervisor from a spec of plain data, and supervisor_child,
# which writes such a spec. So supervisors nest into trees across nodes: the
# inner one dies with its parent (its port was spawned linked), and its
# children die with it.
#
# May import aemp, the leaves and the package's other parts.

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aemp
from aemp._runtime import SELF

from ._spec import Child, InvalidSpec
from ._supervisor import Supervisor

SUPERVISE = "aemp.supervisor:supervise"  # the spawn target of a nested supervisor


@aemp.spawnable
def supervise(spec: dict[str, Any]) -> None:
    """Run as a spawned port: make it a Supervisor (a child that supervises).

    ``spec`` is plain data: {"children": [[id, target, args, restart], ...],
    and optionally "strategy", "max_restarts", "period", "hosts",
    "rebalance", "on_event" (a port ID)}. The Supervisor object lives as
    long as the port. A node runs this for another node only if it loaded
    aemp.supervisor (it is marked spawnable).
    """
    if not isinstance(spec, dict):
        raise InvalidSpec(f"supervise takes a dict spec (got {spec!r:.80})")
    unknown = set(spec) - {
        "children", "strategy", "max_restarts", "period", "hosts", "rebalance", "on_event"
    }  # fmt: skip
    if unknown:
        raise InvalidSpec(f"supervise: unknown keys {sorted(unknown)!r}")
    entries = spec.get("children", [])
    if not isinstance(entries, list | tuple):
        raise InvalidSpec(f"supervise: children must be a list (got {entries!r:.80})")
    children = []
    for entry in entries:
        if not isinstance(entry, list | tuple) or not 2 <= len(entry) <= 4:
            raise InvalidSpec(
                f"supervise: a child is [id, target, args, restart] (got {entry!r:.80})"
            )
        children.append(Child(*entry))
    me = SELF.get()
    if me is None:
        raise InvalidSpec("supervise runs as a spawned port (spawn it, or make a Supervisor)")
    keys = {k: v for k, v in spec.items() if k != "children"}
    Supervisor(children, _port=me, **keys)


def supervisor_child(
    id: str,
    children: Iterable[Child],
    *,
    restart: str = "permanent",
    **options: Any,
) -> Child:
    """A Child spec that runs a nested supervisor (``supervise``) with these
    children and options (plain data only: on_event must be a port ID)."""
    spec: dict[str, Any] = {"children": [c.as_data() for c in children], **options}
    return Child(id, SUPERVISE, (spec,), restart)
