# Worker pools: functions offered on the bus, and callers spread over them.
#
# Worker side: offer() makes one port that answers calls for one or more
# named functions and registers it with db_reg in the family "fn:NAME" of
# each (value {"limit": n}), so the port leaves the database when it dies
# or its node is lost. A request is a cal: [name, *args, reply]. Jobs may be
# sync (run inline: the port is busy meanwhile), async (an awaitable runs
# as a task of the node, so up to `limit` run at once) or blocking (wrapped
# by blocking_job: it runs in a thread with aemp.run_blocking, an awaitable
# like any other). With `limit` jobs in flight the worker answers at once
# with the busy reply, an error reply of type BUSY_TYPE, instead of
# queueing: the job did not run, so any caller may send it elsewhere. The
# answer is [result]; an exception is an error reply (aemp.service), and
# the worker lives on.
#
# Caller side: a Pool follows the family through db_mon and keeps, per
# worker, the calls it has outstanding there. A call picks a worker that
# is neither benched nor marked busy ("least": the fewest outstanding
# calls, ties taken in turn; "two": the better of two random ones), and
# sends it the request as a cal would, with its own reply port
# (lowlevel.reply_ports); the rest of cal is the pool's, shared by its
# calls: one monitor per worker (its death fails the calls out there) and
# buckets of deadlines (aemp/_deadlines.py, as cal's). The outcome decides
# the rest:
#   reply [value]          -> the result; the worker's penalty is forgiven
#   busy                   -> marked busy for a short back-off, try another
#   error reply            -> RemoteError, never retried (the job ran and
#                             failed)
#   the worker died        -> the worker is forgotten (its node said so)
#                             or benched (its link was lost); the call moves
#                             on only if marked idempotent (it may have
#                             run), else PortDead is raised
#   no answer in time      -> CallTimeout; the worker is benched
#   anything else          -> BadReply, the worker is benched
# Benched means left out for `retry_after` seconds, doubling on each new
# failure up to MAX_BENCH; after that it is picked again, so a worker that
# was only slow comes back (db_mon says nothing new about it). Only the
# database removes a worker for good. A worker on another node may be
# picked only while that node is connected (its monitor makes the node
# connect; a failure to connect benches it), so a call never waits in a
# connection that may not come, and the loss of a worker always means
# its calls may have run. A call with no worker to pick waits in the
# pool's queue until one is added, connected, freed from the bench or
# from busy, or until its deadline: NoWorkers if none was known, AllBusy
# if the workers stayed busy, benched or unreachable. Every call's whole
# life, retries and waits included, is bounded by its timeout.
#
# The call's outcome is a Pending (aemp._pending) like a cal's, driven by
# callbacks: no task or coroutine per call, and no object per attempt but
# the reply port, which makes a pool call cost about what a plain cal
# costs (bench/bench_pool.py, bench/pool_count.py).
#
# The parts: _names.py (the errors, the family of a function, the names
# of the wire), _worker.py (offer, Worker), _pool.py (Pool, PoolCall) and
# _results.py (map and imap_unordered).
#
# A capability (layer 6): imports only aemp, aemp.lowlevel, the leaves
# and aemp.service.

from __future__ import annotations

from ._names import BUSY_TYPE, AllBusy, BadReply, NoWorkers, PoolClosed, family_of
from ._pool import Pool, PoolCall
from ._results import Results
from ._worker import Worker, blocking_job, offer

__all__ = [
    "BUSY_TYPE",
    "AllBusy",
    "BadReply",
    "NoWorkers",
    "Pool",
    "PoolCall",
    "PoolClosed",
    "Results",
    "Worker",
    "blocking_job",
    "family_of",
    "offer",
]
