# Service ports: ports whose handlers answer calls, and whose handler
# exceptions go back to the caller as error replies while the port lives on.
#
# A plain port dies when a callback raises, which is right for an actor
# (its state may be broken) and wrong for a stateless service: one
# malformed request (`aemp cal PORT add 2` to a two-argument handler)
# would stop it for every other caller. A service port takes each message
# as a cal request, [tag, *args, reply], calls the handler for the tag with
# *args, and sends what it returns to `reply` as the one element of the
# reply; when the handler raises, it sends an error reply instead (the
# wire form is aemp._errors', documented in docs/protocol.md, "Error
# replies"), which the caller's cal raises as aemp.RemoteError. A handler
# may be `async def` (or return an awaitable): the port then takes its
# next message when the awaitable is done, as any port does.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aemp
from aemp import lowlevel

from ._errors import ERROR_TAG, InvalidArgument, MessageError, error_reply

__all__ = [
    "ERROR_TAG",
    "answer",
    "answer_error",
    "error_reply",
    "is_reply_port",
    "reply_to",
    "service",
]

log = logging.getLogger("aemp.service")

Handler = Callable[..., Any]


def service(
    default: Handler | Mapping[str, Handler] | None = None,
    /,
    *,
    node: aemp.Node | None = None,
    **handlers: Handler,
) -> str:
    """Create a service port (on `node`, default the current node); return its ID.

    ``service(add=lambda a, b: a + b)``: a message ``["add", 1, 2, reply]``
    (what ``cal(port, "add", 1, 2)`` sends) calls ``add(1, 2)`` and sends
    ``[3]`` to ``reply``. ``default`` gets the whole message but the reply
    port when no tagged handler matches; a Mapping adds handlers whose
    tags are not Python names. A handler that raises sends an error reply
    and the port lives on; so does a tag without a handler (LookupError).
    A message whose last element is not a port ID ("node#name") is logged
    and dropped.
    """
    if isinstance(default, Mapping):
        handlers = {**default, **handlers}
        default = None
    for tag, fn in handlers.items():
        if not callable(fn):
            raise InvalidArgument(
                f"service handler for {tag!r} must be callable "
                f"(got {fn!r:.60}, a {type(fn).__name__})"
            )
    if default is not None and not callable(default):
        raise InvalidArgument(
            f"service default handler must be callable (got {default!r:.60}, "
            f"a {type(default).__name__})"
        )
    where = node if node is not None else lowlevel.current_node()
    tags = {tag: _answering(where, fn) for tag, fn in handlers.items()}
    fallback = default if default is not None else _no_handler(sorted(handlers))
    return where.port(_answering(where, fallback), **tags)


def reply_to(node: aemp.Node, reply: object, fn: Handler, args: tuple[Any, ...]) -> Any:
    """Call fn(*args) and answer `reply` with its result, or with an error
    reply if it raises; an awaitable result is returned as a coroutine that
    does the same once it is done (for the caller to run as a task).

    The building block of service ports and of aemp.pool's workers, for a
    handler of one's own: `reply` is the last element of a cal request.
    """
    try:
        r = fn(*args)
    except Exception as e:
        answer_error(node, reply, e)
        return None
    if type(r) not in PLAIN:
        return answer(node, reply, r)
    try:  # answer(), inlined: this is every answer's path
        node.snd(reply, r)  # type: ignore[arg-type]
    except aemp.AempError:
        answer(node, reply, r)  # sends the error reply, or logs why it cannot
    return None


def answer(node: aemp.Node, reply: object, result: Any) -> Any:
    """Answer `reply` with a handler's result: ``[result]``, or an error
    reply when the result cannot cross the wire (MessageError). An
    awaitable result is returned as a coroutine that awaits it and answers
    with what it gives or raises (for the caller to run as a task), and
    nothing is sent yet; else None. A reply that cannot be sent (not a port
    ID, the node closed) is logged as a warning.

    reply_to's second half, for a handler of one's own that calls the
    function itself (aemp.pool's workers count the jobs they run).
    """
    if type(result) not in PLAIN and inspect.isawaitable(result):
        return _finish(node, reply, result)
    _send(node, reply, result)
    return None


# The types of results that are never awaitable, tested before inspect's slower test
PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


async def _finish(node: aemp.Node, reply: object, awaitable: Any) -> None:
    try:
        r = await awaitable
    except Exception as e:
        answer_error(node, reply, e)
    else:
        _send(node, reply, r)


def _send(node: aemp.Node, reply: object, result: Any) -> None:
    try:
        node.snd(reply, result)  # type: ignore[arg-type]
    except MessageError as e:  # a result that cannot cross the wire
        answer_error(node, reply, e)
    except aemp.AempError as e:  # not a port ID after all, or the node closed
        log.warning("cannot reply to %.100r: %s", reply, e)


def answer_error(node: aemp.Node, reply: object, exc: Exception) -> None:
    """Answer `reply` with the error reply for exc (logged if it cannot be sent)."""
    try:
        node.snd(reply, *error_reply(exc))  # type: ignore[arg-type]
    except aemp.AempError as e:  # not a port ID after all, or the node closed
        log.warning("cannot send an error reply to %.100r: %s", reply, e)


def _answering(node: aemp.Node, fn: Handler) -> Handler:
    def answer(*msg: Any) -> Any:
        if not msg or not is_reply_port(msg[-1]):
            log.warning(
                "service port %s dropped a message without a reply port last: %.200r",
                aemp.SELF.get(),
                msg,
            )
            return None
        return reply_to(node, msg[-1], fn, msg[:-1])

    return answer


def is_reply_port(x: object) -> bool:
    """Whether x can be the reply port a cal request ends with: a port ID
    (never a bare node ID, which would make this node dial that name)."""
    return type(x) is str and "#" in x


def _no_handler(known: list[str]) -> Handler:
    names = ", ".join(repr(k) for k in known) or "none"

    def no_handler(*msg: Any) -> None:
        tag = msg[0] if msg else None
        raise LookupError(f"no handler for {tag!r:.80} on this service (handlers: {names})")

    return no_handler
