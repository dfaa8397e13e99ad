# Deadlines shared by many pending things: cal's (aemp/_call.py) and a
# pool's calls (aemp/pool/_pool.py).
#
# Items with the same timeout, added within a thousandth of it (at least a
# millisecond), share a bucket and its two timers. Joining a bucket reads
# no clock: one timer seals the bucket when that window is over, and the
# other ends it after the timeout counted from the end of the window, so
# no item ends early, and none later than 0.1% of its timeout (1 ms for
# short ones). An item leaves its bucket by being deleted from it (the
# bucket is a dict of items); those still in it at the end expire.
#
# A leaf: imports nothing of aemp.

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    """Timeouts in shared buckets: ``bucket(timeout)`` is the dict a new item
    with that timeout joins; ``expire(item)`` is called for each item still
    in its bucket at the end. ``later(delay, fn)`` runs fn after delay
    seconds (a timer of the owner's, cancelled when the owner closes).

    The hot path may look up ``open.get(timeout)`` itself, and call
    bucket() only when that is None.
    """

    __slots__ = ("_expire", "_later", "open")

    def __init__(
        self, later: Callable[[float, Callable[[], None]], Any], expire: Callable[[T], None]
    ) -> None:
        self._later = later
        self._expire = expire
        self.open: dict[float, dict[T, None]] = {}  # timeout -> bucket taking items

    def bucket(self, timeout: float) -> dict[T, None]:
        """The bucket an item with this timeout (seconds, > 0) joins now."""
        bucket = self.open.get(timeout)
        if bucket is not None:
            return bucket
        # timeouts on a millisecond grid, rounded up, share buckets
        key = math.ceil(timeout * 1000 - 1e-9) / 1000
        bucket = self.open.get(key)
        if bucket is None:
            bucket = self.open[key] = {}
            window = key / 1000 if key > 1.0 else 0.001
            self._later(window, lambda: self._seal(key, bucket))
            self._later(window + key, lambda: self._end(bucket))
        return bucket

    def _seal(self, key: float, bucket: dict[T, None]) -> None:
        if self.open.get(key) is bucket:
            del self.open[key]

    def _end(self, bucket: dict[T, None]) -> None:
        expire = self._expire
        for item in list(bucket):
            if item in bucket:  # an earlier one's expiry may have ended it
                expire(item)
