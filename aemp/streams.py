"""aemp.streams: raw byte streams between two nodes, for bulk data that
should not go through the message path (AnyEvent::MP::DataConn's idea).

    stream = await open_stream(node, "other-node", "pkg.mod:receiver", "file.bin")
    async with stream:
        await stream.send_all(data)

and on the other node, run in a port of its own as spawn runs a function:

    @aemp.spawnable
    async def receiver(name: str, stream: Stream) -> None:
        async with stream:
            while chunk := await stream.receive_some():
                ...

How a stream opens. The opener spawns ``aemp.streams:accept`` on the peer
(so the peer's spawn policy applies, and the peer must have imported this
module) with a fresh id, the init function, its arguments and a control
port of its own. ``accept`` checks the init function against the spawn
policy as a spawn request would, expects the data connection under that
id from the opener, and answers "ready" with its listeners and a control
port of its own. Whichever side listens is dialled: the peer if it has
listeners, else the opener. The data connection comes in on the same
listeners as links, with the same authentication and TLS
(docs/protocol.md, "Data connections"), and then carries raw bytes. The
peer runs ``init(*args, stream)`` in the spawned port; when that port
dies, its stream is closed.

How a stream ends. TCP cannot tell a peer that closed from one that was
killed: both leave an end of file. So each side's control port watches
the other's, and aclose() sends ("end", bytes sent) to the peer's control
port before the socket closes. A reader at the end of the bytes returns
b"" once that count matches what it read; when the peer's control port
dies first (the node lost, the port killed), or the count is short, the
stream is broken: BrokenStreamError. After aclose() every call raises
ClosedStreamError.

Flow control and memory: each side buffers at most ``stream_buffer``
bytes (a configuration key, 1 MiB by default) of received data before it
stops reading the socket, and send_all waits while that many are unsent.

A capability (layer 6): it uses aemp, aemp.lowlevel and the leaves only.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Callable
from typing import Any

import aemp
from aemp import lowlevel

from ._errors import (
    BrokenStreamError,
    ClosedStreamError,
    InvalidArgument,
    LocalProtocolError,
    OutOfRange,
    SpawnError,
    SpawnRefused,
)
from ._ids import check_port_id
from ._runtime import CURRENT, SELF
from ._targets import parse_spawn_target

__all__ = ["BrokenStreamError", "ClosedStreamError", "Stream", "accept", "open_stream"]

ACCEPT = "aemp.streams:accept"
MAX_ID = 200  # characters of a data connection's id (the wire's bound)


class _Control:
    """A stream end's control port, made before the stream itself, so that
    what the peer sends to it early (its "end" may come before our side of
    the data connection is through) is kept, and the watch on the peer's."""

    __slots__ = ("changed", "end", "gone", "node", "port", "watch")

    def __init__(self, node: aemp.Node) -> None:
        self.node = node
        self.end: int | None = None  # bytes the peer says it sent, once it closed
        self.gone: tuple[Any, ...] | None = None  # its control port died: why
        self.changed = asyncio.Event()
        self.watch: aemp.Handle | None = None
        self.port = node.port()
        node.rcv(self.port, end=self._got_end)

    def _got_end(self, nbytes: Any, *_: Any) -> None:
        if type(nbytes) is int and self.end is None:
            self.end = nbytes
            self.changed.set()

    def watch_peer(self, peer_ctl: str) -> None:
        self.watch = self.node.mon(peer_ctl, self._lost)

    def _lost(self, *reason: Any) -> None:
        self.gone = reason
        self.changed.set()

    def forget(self) -> None:
        """No stream came of it: stop watching, and end the port."""
        if self.watch is not None:
            self.watch.cancel()
        self.node.kil(self.port)


class Stream:
    """One end of a data stream, in trio's style: send_all, receive_some,
    aclose, ``async with``. Made by open_stream() and, on the peer, handed
    to the init function; never made by hand.

    One task may send while another receives; two tasks sending at once
    (or receiving at once) is an error of the program (LocalProtocolError).
    """

    def __init__(
        self,
        node: aemp.Node,
        raw: lowlevel.DataStream,
        ctl: _Control,
        peer_ctl: str,
        end_wait: float,
    ) -> None:
        self._node = node
        self._raw = raw
        self._ctl = ctl  # our control port: the peer's "end" comes there
        self._peer_ctl = peer_ctl
        self._end_wait = end_wait
        self._sending = self._receiving = False
        self._closed = False
        self._broken: BrokenStreamError | None = None  # found broken: every call says so
        if ctl.watch is None:
            ctl.watch_peer(peer_ctl)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<aemp.streams.Stream {self._raw.dataconn_id!r} with {self.peer!r} {state}>"

    @property
    def peer(self) -> str:
        """The node ID at the other end."""
        return self._raw.peer

    @property
    def bytes_sent(self) -> int:
        return self._raw.bytes_out

    @property
    def bytes_received(self) -> int:
        return self._raw.bytes_in

    # -- trio's stream interface ---------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of `data`; returns when the last byte is handed to the
        socket, waiting while stream_buffer bytes are unsent.

        ClosedStreamError after aclose(); BrokenStreamError when the peer
        or the network broke the stream.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(
                f"send_all takes bytes, a bytearray or a memoryview (got {type(data).__name__})"
            )
        if self._closed:
            raise ClosedStreamError(f"{self!r}: send_all after aclose")
        if self._sending:
            raise LocalProtocolError(f"{self!r}: another task is in send_all")
        if self._broken is None and self._ctl.gone is not None and self._ctl.end is None:
            self._broken = BrokenStreamError(
                f"{self!r}: the peer's end went away ({_reason(self._ctl.gone)})"
            )
        if self._broken is not None:
            raise self._broken
        self._sending = True
        try:
            await self._raw.write(data)
        except BrokenStreamError as e:
            self._broken = e
            raise
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes from the peer (at most max_bytes; None: what one
        read brought), waiting for some; b"" once the peer closed and every
        byte it sent was read.

        ClosedStreamError after aclose(); BrokenStreamError when the peer
        or the network broke the stream, also when the bytes ended without
        the peer's close (it was killed, or its node was lost).
        """
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgument(
                f"receive_some: max_bytes must be an int >= 1 or None (got {max_bytes!r})"
            )
        if self._closed:
            raise ClosedStreamError(f"{self!r}: receive_some after aclose")
        if self._receiving:
            raise LocalProtocolError(f"{self!r}: another task is in receive_some")
        if self._broken is not None:
            raise self._broken
        self._receiving = True
        try:
            data = await self._raw.read(max_bytes)
            if not data:
                await self._check_end()
            return data
        except BrokenStreamError as e:
            self._broken = e
            raise
        finally:
            self._receiving = False

    async def _check_end(self) -> None:
        # the bytes ended: clean only if the peer said so, with their count
        try:
            async with asyncio.timeout(self._end_wait):
                while self._ctl.end is None and self._ctl.gone is None:
                    self._ctl.changed.clear()
                    await self._ctl.changed.wait()
        except TimeoutError:
            pass
        if self._closed:
            raise ClosedStreamError(f"{self!r}: closed while receiving")
        got = self._raw.bytes_in
        if self._ctl.end is None:
            why = (
                f"the peer's end went away ({_reason(self._ctl.gone)})"
                if self._ctl.gone is not None
                else f"the peer did not confirm its close within {self._end_wait:g} s"
            )
            raise BrokenStreamError(f"{self!r}: the bytes ended after {got} without a close: {why}")
        if self._ctl.end != got:
            raise BrokenStreamError(
                f"{self!r}: the peer closed after sending {self._ctl.end} bytes, {got} arrived"
            )

    async def aclose(self) -> None:
        """Close this end: what send_all handed over still goes out, then the
        peer reads the end (b""). Returns once it is out, or resets the
        stream after monitor_timeout if the peer reads none of it.
        Idempotent; never raises."""
        if self._closed:
            return
        self._close(abort=False)
        await self._raw.wait_closed(self._end_wait)

    def _close(self, abort: bool) -> None:
        if self._closed:
            return
        self._closed = True
        ctl = self._ctl
        ctl.changed.set()
        if ctl.watch is not None:
            ctl.watch.cancel()
        node, raw = self._node, self._raw
        if node.closed:
            raw.close(abort=True)
            return
        if abort:
            node.kil(ctl.port, "aborted", "the stream's port died")
        else:
            node.snd(self._peer_ctl, "end", raw.bytes_out)
            node.kil(ctl.port)
        raw.close(abort=abort)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _reason(reason: tuple[Any, ...] | None) -> str:
    if not reason:
        return "closed"
    return ", ".join(str(r) for r in reason)[:200]


def _end_wait(node: aemp.Node) -> float:
    # how long an end of file waits for the peer's "end": as long as a
    # monitor would take to notice the peer is gone
    return float(node.config.monitor_timeout)


def _drop(connected: asyncio.Future[Any]) -> None:
    """Stop waiting for a data connection; reset it if it came meanwhile."""
    if not connected.done():
        connected.cancel()
    elif not connected.cancelled() and connected.exception() is None:
        connected.result().close(abort=True)


def _new_id(node: aemp.Node) -> str:
    token = secrets.token_urlsafe(9)
    full = f"{token}@{node.id}"
    return full if len(full) <= MAX_ID else token


def _spawned_died(
    ready: asyncio.Future[tuple[Any, ...]], connected: asyncio.Future[Any]
) -> Callable[..., None]:
    # the peer's accept port died before the stream opened: why, at once
    # (also after it answered "ready": its own dial may have failed)
    def died(*reason: Any) -> None:
        for fut in (ready, connected):
            if not fut.done():
                fut.set_exception(_open_error(reason))
                return

    return died


def _open_error(reason: tuple[Any, ...]) -> Exception:
    """The exception for the peer's accept port dying before the stream opened."""
    if len(reason) >= 2 and reason[0] == "die" and isinstance(reason[1], str):
        text = reason[1]
        kind, _, message = text.partition(": ")
        if kind == "SpawnRefused":
            return SpawnRefused(message)
        if kind in ("SpawnError", "ModuleNotFoundError", "AttributeError", "ImportError"):
            return SpawnError(message or text)
        return BrokenStreamError(f"the peer's side of the stream failed: {text}")
    return BrokenStreamError(f"the peer's accept ended before the stream opened: {_reason(reason)}")


async def open_stream(
    node: aemp.Node,
    to: str,
    target: str,
    *args: Any,
    timeout: float = 30.0,  # noqa: ASYNC109 - it bounds the handshake only, not the stream
) -> Stream:
    """Open a data stream to node `to` (or the node of port `to`), where
    ``target(*args, stream)`` runs in a new port to take the other end.

    `target` is a spawn target ("pkg.mod:func", plain or async def) and is
    checked by the peer's spawn policy as spawn's are: it must be marked
    @spawnable or allowed by spawn_allow there, and the peer must have
    imported aemp.streams. Raises SpawnRefused (the policy said no),
    SpawnError (no such function), BrokenStreamError (no connection within
    `timeout` seconds, the peer lost, neither node listens), and the
    argument errors InvalidArgument / InvalidID / MessageError.
    """
    if not isinstance(to, str):
        raise InvalidArgument(f"open_stream: to must be a node or port ID (got {to!r})")
    check_port_id(to)
    parse_spawn_target(target)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise OutOfRange(f"open_stream: timeout must be a positive number (got {timeout!r})")
    peer = aemp.node_of(to)
    if peer == node.id:
        return await _open_local(node, target, args)
    dataconn_id = _new_id(node)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[Any, ...]] = loop.create_future()
    control = _Control(node)
    ctl = control.port
    node.rcv(ctl, ready=lambda *m: None if ready.done() else ready.set_result(m))
    connected = lowlevel.expect_data_connection(node, peer, dataconn_id)
    watch: aemp.Handle | None = None
    try:
        async with asyncio.timeout(timeout):
            pid = node.spawn(peer, ACCEPT, dataconn_id, target, list(args), ctl)
            watch = node.mon(pid, _spawned_died(ready, connected))
            listeners, peer_ctl = await ready
            check_port_id(peer_ctl)
            control.watch_peer(peer_ctl)
            if listeners:
                lowlevel.dial_data_connection(node, peer, dataconn_id, list(listeners))
            raw = await connected
    except TimeoutError as e:
        control.forget()
        _drop(connected)
        raise BrokenStreamError(
            f"no data stream to {peer!r} within {timeout:g} s (is aemp.streams imported there, "
            "and does one of the two nodes listen?)"
        ) from e
    except BaseException as e:
        control.forget()
        _drop(connected)
        if isinstance(e, ConnectionError) and not isinstance(e, BrokenStreamError):
            raise BrokenStreamError(str(e)) from e
        raise
    finally:
        if watch is not None:
            watch.cancel()
    return Stream(node, raw, control, peer_ctl, _end_wait(node))


@aemp.spawnable
async def accept(dataconn_id: Any, target: Any, args: Any, peer_ctl: Any) -> None:
    """The peer's side of open_stream, spawned by it (not for users).

    Runs in its own port: checks `target` against this node's spawn policy,
    expects the data connection, answers "ready" to the opener's control
    port, and runs ``target(*args, stream)`` in this port. A refusal or a
    bad argument raises, which kills the port: the opener's monitor hears
    why.
    """
    node: aemp.Node = CURRENT.get()
    me = SELF.get()
    if not isinstance(dataconn_id, str) or not isinstance(peer_ctl, str) or me is None:
        raise TypeError("accept(dataconn_id: str, target, args: list, peer_ctl: str)")
    if not isinstance(args, list):
        raise TypeError(f"accept: args must be a list (got {type(args).__name__})")
    check_port_id(peer_ctl)
    peer = aemp.node_of(peer_ctl)
    init = lowlevel.spawn_function(node, target)  # SpawnRefused / SpawnError kill us
    connected = lowlevel.expect_data_connection(node, peer, dataconn_id)
    control = _Control(node)
    control.watch_peer(peer_ctl)
    ctl = control.port
    try:
        listeners = node.listeners
        node.snd(peer_ctl, "ready", listeners, ctl)
        if not listeners:
            lowlevel.dial_data_connection(node, peer, dataconn_id)
        async with asyncio.timeout(_end_wait(node)):
            raw = await connected
    except BaseException:
        _drop(connected)
        control.forget()
        raise
    stream = Stream(node, raw, control, peer_ctl, _end_wait(node))
    node.mon(me, lambda *reason: stream._close(abort=bool(reason)))
    result = init(*args, stream)
    if inspect.isawaitable(result):
        await result


async def _open_local(node: aemp.Node, target: str, args: tuple[Any, ...]) -> Stream:
    """A stream within one node: a socket pair, with the same ends and rules."""
    init = lowlevel.spawn_function(node, target, remote=False)
    one, two = await lowlevel.stream_pair(node)
    ctl_a, ctl_b = _Control(node), _Control(node)
    wait = _end_wait(node)
    mine = Stream(node, one, ctl_a, ctl_b.port, wait)
    theirs = Stream(node, two, ctl_b, ctl_a.port, wait)
    port = lowlevel.gated_port(node)
    node.mon(port, lambda *reason: theirs._close(abort=bool(reason)))
    lowlevel.release(node, port, init, *args, theirs)
    return mine
