# The node kernel: ports, the run queue and the dispatch, kills and
# monitors, port context, node-owned tasks and timers, the remote-node
# table and the open registry of node requests. It imports only the leaves
# and aemp/_seam.py, never the network, the database, cal or spawn; what it
# offers the layers above is Kernel's methods without a leading underscore
# (aemp.lowlevel is the documented face of them for code that extends aemp).

from ._dispatch import make_snd
from ._handles import Handle, Monitor, NodeWatch, Timer
from ._kernel import Kernel
from ._port import Port
from ._state import check_callback, die_reason

__all__ = [
    "Handle",
    "Kernel",
    "Monitor",
    "NodeWatch",
    "Port",
    "Timer",
    "check_callback",
    "die_reason",
    "make_snd",
]
