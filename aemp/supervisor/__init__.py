# aemp.supervisor: OTP's supervisors, for ports on other nodes.
#
# A Supervisor is a port with a list of child specs (a spawn target, its
# arguments, a restart kind). It spawns each child with
# lowlevel.spawn_linked, linked to its own port, so that the node running
# a child kills it when the supervisor dies or when it loses the
# supervisor's node: no orphans, wherever the child runs. It monitors each
# child; when one exits it restarts it (permanent: always, transient: after
# an abnormal exit, temporary: never) together with the children its
# strategy names (one_for_one: itself, one_for_all: all, rest_for_one: those
# after it), killing those first. More than max_restarts restarts within
# period seconds (on the loop's clock) and it gives up: it kills its own
# port with ("max_restarts", text), its children die with it, and a parent
# supervisor sees that exit as any other. A supervisor is a port, so a
# child can be a supervisor (target "aemp.supervisor:supervise"): trees.
#
# Placement. The hosts are this node (hosts=None), a list of node IDs, or
# the name of a database family whose subkeys are the hosts' node IDs (or
# port IDs, taken as their nodes). A listed host counts while it is linked
# or in the network's address family 'l; a family's host while it is in
# the family. Both are watched (db_mon, watch_links): waiting for hosts is
# an event, never a sleep. A child goes to the least loaded host, a
# restarted one back to its host if that is still there. A child that dies
# with its host's transport_error marks the host lost (one loss counts as
# one restart, however many children it took) until the host shows up
# again (a link comes up, or its entry is added or changed, or it is still
# listed after twice monitor_timeout: then only the link broke); the child
# goes elsewhere, or waits. When a host comes (back), waiting children go
# there and, with rebalance, children move from the most loaded hosts
# until the loads differ by one at most. A spawn that a host refuses
# ("SpawnRefused", or on this node a target that does not resolve) is not
# a crash: the child is tried on the other hosts, and fails alone (a
# "failed" event) once every host refused it; it is tried again on a host
# that comes later. Nothing else is harmed, and nothing counts.
#
# Events (started, exited, restarted, moved, waiting, refused, failed,
# gave_up, stopped) go to the log ("aemp.supervisor") and to on_event: a
# callable, run from the run queue in the supervisor's port (an exception
# kills the supervisor, as any callback's kills its port), or a port ID
# that gets ("supervisor", kind, ...) messages, which works across nodes.
#
# The parts: _spec.py (child specs, events, errors: plain data),
# _supervisor.py (the Supervisor), _tree.py (a supervisor as a child).
# May import aemp, aemp.lowlevel and the leaves (a capability, layer 6).

from __future__ import annotations

from ._spec import Child, ChildInfo, Event, InvalidSpec, SupervisorExited
from ._supervisor import Supervisor
from ._tree import supervise, supervisor_child

__all__ = [
    "Child",
    "ChildInfo",
    "Event",
    "InvalidSpec",
    "Supervisor",
    "SupervisorExited",
    "supervise",
    "supervisor_child",
]
