# The client side of the control socket: find this host's nodes and talk to
# one of them (JSON lines, docs/control.md). The aemp command uses it; so
# can any program of the same user.
#
# May import aemp, the leaves and the capability's modules.

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .. import CallTimeout, DbTimeout, PortDead
from ._paths import ControlError, clean_stale, runtime_dir, socket_files, socket_path

MAX_REPLY = 256 * 1024 * 1024  # bytes of one reply line the client takes (a big family)
CONNECT_TIMEOUT = 2.0


def _raise(reply: dict[str, Any]) -> Any:
    """The reply's result, or the error it names raised again."""
    if reply.get("ok") is True:
        return reply.get("result")
    message = str(reply.get("error", "no error text"))
    kind = reply.get("type")
    try:
        if kind == "PortDead":
            raise PortDead(str(reply["port"]), tuple(reply["reason"]))
        if kind == "CallTimeout":
            raise CallTimeout(str(reply["port"]), float(reply["timeout"]))
        if kind == "DbTimeout":
            raise DbTimeout(str(reply["query"]), float(reply["timeout"]), str(reply["where"]))
    except (KeyError, TypeError, ValueError):
        pass
    raise ControlError(message, str(reply.get("code", "failed")), reply)


class Client:
    """One connection to a node's control socket; ``async with`` closes it."""

    def __init__(self, path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.path = path
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, path: Path, limit: float = CONNECT_TIMEOUT) -> Client:
        """Connect to the socket at `path`. ControlError says why not (stale, refused...)."""
        try:
            async with asyncio.timeout(limit):
                reader, writer = await asyncio.open_unix_connection(
                    os.fspath(path), limit=MAX_REPLY
                )
        except FileNotFoundError:
            raise ControlError(f"no control socket {path}", "no_node") from None
        except ConnectionRefusedError:
            raise ControlError(
                f"nobody listens on {path} (a dead node's socket)", "stale"
            ) from None
        except PermissionError:
            raise ControlError(
                f"cannot reach {path}: permission denied (it is another user's)", "refused"
            ) from None
        except TimeoutError:
            raise ControlError(f"{path} did not accept within {limit:g} s", "timeout") from None
        except OSError as e:
            raise ControlError(f"cannot reach {path}: {e.strerror or e}") from None
        return cls(path, reader, writer)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def send(self, cmd: str, **args: Any) -> None:
        """Send one request line. A connection the node closed already is no
        error here: receive() then reads why it closed it (a refusal, "busy")."""
        try:
            self._writer.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            await self._writer.drain()
        except ConnectionError:
            pass

    async def receive(self) -> dict[str, Any]:
        """The next line from the node, as a dict; ControlError when the node hung up."""
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise ControlError(f"the node on {self.path} closed the connection", "closed") from None
        except (asyncio.LimitOverrunError, ValueError):
            raise ControlError(f"a reply from {self.path} is over {MAX_REPLY} bytes") from None
        except ConnectionError as e:
            raise ControlError(f"the connection to {self.path} broke: {e}", "closed") from None
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlError(f"{self.path} answered a line that is not JSON") from None
        if not isinstance(reply, dict):
            raise ControlError(f"{self.path} answered {line[:60]!r}, not a JSON object")
        return reply

    async def request(self, cmd: str, **args: Any) -> Any:
        """Send one request and return its result; the node's error raised again
        (PortDead, CallTimeout, DbTimeout as the node had them, else ControlError)."""
        await self.send(cmd, **args)
        return _raise(await self.receive())

    async def watch(self, family: str) -> AsyncIterator[dict[str, Any]]:
        """The events of `watch` on `family`: the whole family first, then each change."""
        await self.send("watch", family=family)
        _raise(await self.receive())
        while True:
            reply = await self.receive()
            if "event" not in reply:
                _raise(reply)
                return
            yield reply["event"]


async def connect(nodeid: str, limit: float = CONNECT_TIMEOUT) -> Client:
    """Connect to the local node `nodeid`; ControlError (code "no_node") if none runs here.

    A dead node's socket found on the way is removed.
    """
    path = socket_path(nodeid)
    try:
        return await Client.connect(path, limit)
    except ControlError as e:
        if e.code == "stale":
            clean_stale(path)
            raise ControlError(
                f"node {nodeid} does not run here (its socket was stale)", "no_node"
            ) from None
        if e.code == "no_node":
            raise ControlError(
                f"no node {nodeid} runs here (no socket in {path.parent})", "no_node"
            ) from None
        raise


async def local_nodes(limit: float = CONNECT_TIMEOUT) -> list[dict[str, Any]]:
    """What each live node of this user on this host says to `hello`, plus its
    socket ("control") and, for one that does not answer, an "error".

    Sockets of dead nodes are removed on the way. Sorted by node ID.
    """

    async def one(path: Path) -> dict[str, Any] | None:
        try:
            async with await Client.connect(path, limit) as c:
                async with asyncio.timeout(limit):
                    info: dict[str, Any] = await c.request("hello")
        except ControlError as e:
            if e.code == "stale":
                clean_stale(path)
                return None
            if e.code == "no_node":
                return None
            return {"nodeid": None, "control": os.fspath(path), "error": str(e)}
        except TimeoutError:
            return {
                "nodeid": None,
                "control": os.fspath(path),
                "error": f"no answer within {limit:g} s",
            }
        info["control"] = os.fspath(path)
        return info

    found = await asyncio.gather(*(one(p) for p in socket_files(runtime_dir())))
    nodes = [n for n in found if n is not None]
    return sorted(nodes, key=lambda n: (n["nodeid"] is None, n["nodeid"] or n["control"]))
