# Services: what a configured node starts once it is up.
#
# The `services` key lists them, in order (after those other keys imply:
# IMPLIED below): "pkg.mod:func" is called with no
# arguments, ["pkg.mod:func", args...] with those arguments, and a plain
# "pkg.mod" is imported (for a module that sets itself up on import).
# Functions are found the way the node's own spawn finds them (services are
# local configuration: no spawnable mark is needed), and run with the node as
# the current node, so the module-level API (aemp.port, aemp.rcv, ...) acts
# on it. An `async def` service is awaited before the next one starts; one
# that should run on should start a task with node.spawn_task. A service
# that cannot be found is a ConfigError; one that raises is logged and its
# exception propagates, so configure() fails instead of starting a node
# with half its services.
#
# The keys `control` and `metrics` start the capabilities aemp.control and
# aemp.metrics the same way, before the listed services: by name, so that
# `import aemp` never imports a capability (docs/architecture.md).

from __future__ import annotations

import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, SpawnError
from ._runtime import CURRENT
from ._spawn import resolve_spawn_target

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("aemp.services")


# Capabilities that a configuration key asks for, started as services
# before the configured ones (so that those find the node's peers): by name,
# as every service is, since this layer must not import a capability.
IMPLIED = {"discovery": "aemp.discovery:start"}


async def start_services(node: Node) -> None:
    """Start the control socket and the metrics endpoint if configured, and
    what the node's other keys imply (IMPLIED), then every service of
    node.config.services, in order."""
    if node.config.control:
        await start_service(node, "aemp.control:start")
    if node.config.metrics is not None:
        await start_service(node, ["aemp.metrics:start", node.config.metrics])
    for key, service in IMPLIED.items():
        if getattr(node.config, key):
            await start_service(node, service)
    for spec in node.config.services:
        await start_service(node, spec)


async def start_service(node: Node, spec: Any) -> None:
    target, args = (spec, ()) if isinstance(spec, str) else (spec[0], tuple(spec[1:]))
    token = CURRENT.set(node)
    try:
        try:
            if ":" not in target:
                importlib.import_module(target)
                log.info("node %s: service module %s imported", node.id, target)
                return
            fn = resolve_spawn_target(target)
        except (ImportError, AttributeError, SpawnError) as e:
            raise ConfigError(
                f"service {target!r} of node {node.id!r} cannot be loaded: {type(e).__name__}: {e}"
            ) from e
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
        log.info("node %s: service %s started", node.id, target)
    except ConfigError:
        raise
    except Exception as e:
        log.error("node %s: service %s failed: %s: %s", node.id, target, type(e).__name__, e)
        e.add_note(f"raised by the service {target!r} of node {node.id!r}")
        raise
    finally:
        CURRENT.reset(token)
