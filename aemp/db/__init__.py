"""The distributed database: a layer of its own above the kernel.

Every node runs the client side; a node that becomes global also runs the
global service. The modules, lowest first (each imports only those before
it, and the database reaches the node only through ``_host.Host``):

``_names``
    Family names and subkeys: ``check_family`` for this node's own code
    (``InvalidFamily``), ``valid_peer_family`` and the ``check_*`` functions
    for what other nodes send (``TypeError``/``ValueError``, so that the
    request is logged and ignored).

``_host``
    The ``Host`` Protocol: all the database asks of its node (its ID, loop
    and ``monitor_timeout``; post, call_in, port_alive, mon, spawn_task; the
    node-request registry ``handle(tag, fn)``; ``request(nodeid, tag,
    *args)``, connect, node_is_up, up_nodes, seed_ids). ``aemp/_node.py``
    provides it.

``_merge``
    The global nodes' merge, pure (no I/O, node or event loop): one shard
    per owner, the merged view, who holds which key; updates, replacement
    of an owner's whole shard, dropping an owner, and the own view sent to
    other global nodes. Each operation returns ``Change`` records saying
    what changed, for the caller to send. Its properties are tested with
    hypothesis (tests/test_db_merge.py).

``_service``
    ``Global``, the global node: the g_* requests it answers (an open table,
    ``REQUESTS``, extended per node with ``Db.handle_global``), the mesh of
    global nodes, and the sending of what the merge changed. It reports to
    the client side only through the ``Owner`` callbacks it was given.

``_client``
    ``Db``, every node's side: its own entries, its master, monitors
    (``DbMonitor``), queries (``Query``), entries (``DbEntry``). It creates
    the ``Global`` service when its node becomes global, and registers every
    g_* tag with the node's request registry, once, from ``ANSWERS`` (what a
    master sends) and the service's ``REQUESTS``.

The public API is ``aemp.db_set`` and friends (docs/api.md); the wire
protocol is docs/protocol.md, section 10.
"""

__all__: list[str] = []
