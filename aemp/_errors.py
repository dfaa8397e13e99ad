# The exception tree. Every error aemp raises is an AempError and also the
# built-in exception a caller would naturally catch for that kind of fault,
# so `except ValueError` keeps working for code that knows nothing of aemp.
# The name says whose fault it is: a Local* error is a mistake of this
# program, a Remote* error is the peer's, NodeClosed means you closed it.

from __future__ import annotations

import traceback as _traceback
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


class Overloaded(AempError, BufferError):
    """snd or cal to another node refused: its link holds too much already.

    Raised when the link holds more than max_unsent unsent bytes or, while
    it connects, when more than max_unsent bytes or 100,000 packets wait
    for it. Nothing was sent and the link stays up; await ``drain(port)``
    and send again. Sends to this node's own ports are never refused.
    """


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


class NoCurrentPort(AempError, RuntimeError):
    """self_port() was called outside any port's context."""


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


# The error reply: what a service port sends to a caller's reply port when
# its handler raised, instead of dying (docs/protocol.md, "Error replies").
# Plain data, so that any client can read it: [ERROR_TAG, type, message,
# traceback], all three str. cal turns such a reply into RemoteError.
ERROR_TAG = "aemp:error"
MAX_ERROR_TEXT = 4096  # characters of an error reply's message kept (the start)
MAX_ERROR_TRACEBACK = 16384  # characters of its traceback kept (the end: the raise)


class RemoteError(AempError, RuntimeError):
    """A called port's handler raised: its error reply, as an exception.

    ``port`` is the port that answered; ``type`` the remote exception's type
    name (``"ZeroDivisionError"``, ``"myapp.jobs.BadInput"``), ``message``
    its text and ``traceback`` the remote traceback as text ("" if none was
    sent). The port that raised lives on.
    """

    def __init__(self, port: str, type: str, message: str, traceback: str = "") -> None:
        self.port = port
        self.type = type
        self.message = message
        self.traceback = traceback
        super().__init__(
            f"{port!r} raised {type}: {message}" if message else f"{port!r} raised {type}"
        )

    @classmethod
    def from_reply(cls, port: str, reply: tuple[Any, ...]) -> RemoteError:
        """The RemoteError an error reply stands for; fields that are not str
        (another implementation's mistake) are shown, not trusted."""
        fields = [_text(x, MAX_ERROR_TEXT) for x in reply[1:4]]
        fields += [""] * (3 - len(fields))
        if not fields[0]:
            fields[0] = "aemp.MalformedErrorReply"
        return cls(port, fields[0], fields[1], fields[2])


def _text(x: Any, limit: int) -> str:
    if type(x) is str:
        return x
    try:
        text = repr(x)
    except Exception:  # an int too long for repr, say
        text = f"<a {type(x).__name__}>"
    return text[:limit]


def error_reply(exc: BaseException) -> tuple[str, str, str, str]:
    """The error reply for exc: (ERROR_TAG, type name, message, traceback text),
    each bounded and safe to send (lone surrogates replaced)."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:
        message = f"<{name} whose str() raised>"
    tb = "".join(_traceback.format_exception(exc))
    return (
        ERROR_TAG,
        _clean(name),
        _clean(message[:MAX_ERROR_TEXT]),
        _clean(tb[-MAX_ERROR_TRACEBACK:]),
    )


def _clean(s: str) -> str:
    return s if s.isascii() else s.encode("utf-8", "replace").decode("utf-8")


class JoinError(AempError, ConnectionError):
    """A node could not join its network (Node.wait_joined).

    ``nodeid`` is the node's ID and ``problems`` maps each seed address
    tried to why its last attempt failed ({} if none failed yet).
    """

    def __init__(self, nodeid: str, problems: dict[str, str], what: str) -> None:
        self.nodeid = nodeid
        self.problems = dict(problems)
        tried = "; ".join(f"{addr}: {why}" for addr, why in self.problems.items())
        super().__init__(f"node {nodeid!r} {what}" + (f" ({tried})" if tried else ""))


class JoinRefused(JoinError):
    """Every seed refused this node's authentication: a wrong shared secret
    or certificate, which waiting does not mend."""

    def __init__(self, nodeid: str, problems: dict[str, str]) -> None:
        super().__init__(nodeid, problems, "cannot join: every seed refused its authentication")


class JoinTimeout(JoinError, TimeoutError):
    """No global node served this node within the timeout."""

    def __init__(self, nodeid: str, problems: dict[str, str], timeout: float, seeds: int) -> None:
        self.timeout = timeout
        what = (
            f"did not join within {timeout:g} s: no seed served it"
            if seeds
            else f"did not join within {timeout:g} s"
        )
        super().__init__(nodeid, problems, what)


class ClosedStreamError(AempError, RuntimeError):
    """A data stream was used after this side closed it (aclose)."""


class BrokenStreamError(AempError, ConnectionError):
    """A data stream broke: the peer or the network ended it without a clean
    close (reset, node lost, data missing). The cause, if any, is in
    ``__cause__``."""
