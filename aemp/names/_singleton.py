# Singletons: a spawn target that runs on exactly one node of the network
# at a time, as long as that node holds a name.
#
# Every node that may run it makes a Singleton (a candidate) with the same
# manager URL, family and name. Each candidate tries to hold the name,
# every `retry` seconds while somebody else holds it. The one that gets it
# spawns the target on its own node and keeps the name alive; when the
# holding is lost (its lease lapsed, somebody released or reset it) it
# kills the instance at once: by the lease rule (_api.py) that happens
# before any other candidate can be granted the name, so two instances
# never run with a name each believes it holds. When the holder's node is
# lost, its lease lapses and another candidate takes over: the instance
# moves. When the instance dies by itself, the candidate releases the name
# and tries again after `retry`, so that another node may run it.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aemp
from aemp import lowlevel

from .._errors import InvalidArgument
from ._api import (
    BackendUnavailable,
    Holding,
    NameInUse,
    NameManager,
    check_name,
)

log = logging.getLogger("aemp.names")


class Singleton:
    """Run `target(*args)` (a spawn target) on one node at a time, holding
    ``family/name`` through `manager`.

    ``port``: the local instance's port while this node runs it, else None;
    ``running``: whether it does; ``aclose()`` (or leaving ``async with``)
    stops the candidate, kills a local instance and releases the name.
    Every node that may run the target makes one, with the same names.
    """

    def __init__(
        self,
        node: aemp.Node,
        manager: NameManager,
        name: str,
        target: str,
        *args: Any,
        family: str = "aemp.singleton",
        retry: float | None = None,
    ) -> None:
        if not isinstance(node, aemp.Node):
            raise InvalidArgument(f"Singleton wants an aemp.Node (got {node!r:.60})")
        if not isinstance(manager, NameManager):
            raise InvalidArgument(f"Singleton wants a NameManager (got {manager!r:.60})")
        self.node = node
        self.manager = manager
        self.family = check_name("family", family)
        self.name = check_name("name", name)
        self.target, self.args = target, args
        self.retry = manager.ttl / 3 if retry is None else float(retry)
        self.port: str | None = None
        self.holding: Holding | None = None
        self._died: asyncio.Event | None = None
        self._task = lowlevel.spawn_task(node, self._run())

    @property
    def running(self) -> bool:
        return self.port is not None

    async def _run(self) -> None:
        while True:
            try:
                lease = await self.manager._timed_grant(self.family, self.name, False)
            except (NameInUse, BackendUnavailable):
                await asyncio.sleep(self.retry)
                continue
            self.holding = self.manager._start(lease, None)
            try:
                await self._serve(self.holding)
            finally:
                self._stop_instance("aemp.names", "singleton stopped")
            await asyncio.sleep(self.retry)

    async def _serve(self, holding: Holding) -> None:
        died = self._died = asyncio.Event()
        port = self.port = self.node.spawn(self.node.id, self.target, *self.args)
        monitor = self.node.mon(port, lambda *reason: died.set())
        log.info("names: %s runs singleton %s/%s as %s", self.node.id, self.family, self.name, port)
        lost = asyncio.ensure_future(holding.wait_lost())
        ended = asyncio.ensure_future(died.wait())
        try:
            await asyncio.wait([lost, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            ended.cancel()
            monitor.cancel()
        if holding.lost:
            self._stop_instance("aemp.names", f"lost the name {self.family}/{self.name}")
        else:  # the instance ended: let any candidate run it next
            self.port = None
            await holding.release()

    def _stop_instance(self, *reason: Any) -> None:
        port, self.port = self.port, None
        if port is not None and not self.node.closed:
            self.node.kil(port, *reason)

    async def aclose(self) -> None:
        """Stop being a candidate; kill the local instance; release the name."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._stop_instance("aemp.names", "singleton closed")
        if self.holding is not None:
            with contextlib.suppress(BackendUnavailable):
                await self.holding.release()

    async def __aenter__(self) -> Singleton:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
