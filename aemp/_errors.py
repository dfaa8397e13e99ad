# The exception tree. Every error aemp raises is an AempError and also the
# built-in exception a caller would naturally catch for that kind of fault,
# so `except ValueError` keeps working for code that knows nothing of aemp.
# The name says whose fault it is: a Local* error is a mistake of this
# program, a Remote* error is the peer's, NodeClosed means you closed it.

from __future__ import annotations

from typing import Any


class AempError(Exception):
    """Base class of every exception aemp raises."""


class ConfigError(AempError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class InvalidID(AempError, ValueError):
    """A node ID or port ID is malformed."""


class NotLocalPort(AempError, ValueError):
    """An operation that needs a port of this node was given another node's port."""


class InvalidArgument(AempError, TypeError):
    """An argument is of the wrong kind: a callback that is not callable, a
    tag that is not a str, a timeout or delay that is not a number."""


class OutOfRange(AempError, ValueError):
    """A number argument is outside its range: a negative delay, a timeout <= 0."""


class AlreadyHandled(AempError, ValueError):
    """A node request or global-node request tag has a handler already."""


class MessageError(AempError, TypeError):
    """A message is empty or holds a value that cannot cross the wire."""


class SpawnError(AempError, ValueError):
    """A spawn target is not of the form "package.module:function"."""


class SpawnRefused(SpawnError):
    """A node refused a spawn request from another node.

    Never raised to the spawner: the new port dies with
    ``("die", "SpawnRefused: <why>")``, which its monitors get.
    """


class LocalProtocolError(AempError, RuntimeError):
    """This side tried to do something the protocol does not allow right now."""


class RemoteProtocolError(AempError, ValueError):
    """The peer sent something the protocol does not allow; its connection is closed."""


class AuthError(RemoteProtocolError):
    """The peer failed authentication (wrong secret, bad token, refused method)."""


class NodeClosed(AempError, RuntimeError):
    """The node was closed; nothing more can be done with it."""


class NoCurrentNode(AempError, RuntimeError):
    """A module-level function was called where no node can be found."""


class PortDead(AempError, RuntimeError):
    """A port died (or its node became unreachable) before it answered.

    ``port`` is the port ID and ``reason`` the kill reason as a tuple, empty
    for a normal kill.
    """

    def __init__(self, port: str, reason: tuple[Any, ...]) -> None:
        self.port = port
        self.reason = tuple(reason)
        text = ", ".join(repr(r) for r in self.reason) if self.reason else "normal exit"
        super().__init__(f"port {port!r} died: {text}")


class CallTimeout(AempError, TimeoutError):
    """A ``cal`` got no reply within its timeout."""

    def __init__(self, port: str, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        super().__init__(f"no reply from {port!r} within {timeout:g} s")


class InvalidFamily(AempError, ValueError):
    """A database family name or subkey is not valid, or the family is read-only."""


class DbTimeout(AempError, TimeoutError):
    """A database query got no answer from a global node within its timeout."""

    def __init__(self, query: str, timeout: float, where: str) -> None:
        self.query = query
        self.timeout = timeout
        self.where = where
        super().__init__(f"{query} got no answer within {timeout:g} s ({where})")


class ClosedStreamError(AempError, RuntimeError):
    """A data stream was used after this side closed it (aclose)."""


class BrokenStreamError(AempError, ConnectionError):
    """A data stream broke: the peer or the network ended it without a clean
    close (reset, node lost, data missing). The cause, if any, is in
    ``__cause__``."""
