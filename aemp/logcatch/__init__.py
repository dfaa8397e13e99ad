"""aemp.logcatch: the log records of every node, caught in one place.

Two halves meet in the distributed database. A node that shares its log
installs a LogForwarder (``forward()``, or the service
``"aemp.logcatch:forward"``): a logging.Handler on its root logger (or
another) that turns each record into plain data (node, time, level,
logger, message, exception text) and sends it to every catcher that wants
it. A catcher (``LogCatcher``, or ``aemp log`` on the command line) is a
port registered with db_reg in the family ``aemp.logcatch``, its value the
level and logger names it wants, so forwarders filter at the source; each
forwarder follows that family with db_mon and monitors each catcher.

No loops. A record is never forwarded when it comes from the forwarding
path itself: records of the logger ``aemp.logcatch`` (this module's),
records logged while the forwarder sends (snd may log), and records logged
in the context of the forwarder's own port or of a catcher port of this
node (a catcher's callback that logs what it caught). A node whose catcher
logs about its work therefore does not feed its own log back to itself. A
record logged in the context of another node of the same process
(aemp.lowlevel: the node whose callback runs) is left to that node's own
forwarder.

Bounded. While no catcher is known (or every known one was seen to die),
a forwarder keeps the last `buffer` records; older ones are dropped and
counted, with one warning on the node per episode. The next catcher gets
what was kept, then a record from ``aemp.logcatch`` that says how many were
dropped, then a ``log_sync`` message: ``aemp log`` knows from it that this
node has sent what it kept. A catcher keeps at most `queue` records for its
iterator (older ones are dropped and counted). Messages are sent with snd:
records on their way to a catcher whose node then fails are lost, as any
message is (the forwarder's monitor on it turns buffering on again).
Anything a catcher gets that is not a log record is ignored and counted.

Records from other threads (aemp.blocking work) reach the loop through a
bounded queue of their own.

The parts: _entry (what a record is, the families, levels and filters),
_forward (the handler), _catch (the catcher). A capability: imports only
aemp, aemp.lowlevel and the leaves.
"""

from __future__ import annotations

from ._catch import LogCatcher
from ._entry import CATCHERS, FORWARDERS, LogEntry, parse_level
from ._forward import LogForwarder, forward, forwarders

__all__ = [
    "CATCHERS",
    "FORWARDERS",
    "LogCatcher",
    "LogEntry",
    "LogForwarder",
    "forward",
    "forwarders",
    "parse_level",
]
