# The network: listeners, connections, dialling, seeds and the address
# book (aemp/net/_network.py), one connection each (aemp/net/_conn.py:
# Conn, an asyncio Protocol; a test may wrap its methods to hold back or
# count what happens on the wire); data connections in their stream phase
# (aemp/net/_stream.py: RawStream).
#
# It meets the kernel only through the Protocols of aemp/_seam.py: it
# serves a LinkOwner and is its Connector. It never imports the kernel,
# the node or the database; the node (aemp/_node.py) builds it.

from __future__ import annotations

from ._conn import Conn
from ._network import Network, make_settings
from ._stream import RawStream, local_pair

__all__ = ["Conn", "Network", "RawStream", "local_pair", "make_settings"]
