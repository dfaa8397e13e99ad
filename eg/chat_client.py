# eg/chat_client.py: a chat client that survives the server's restart (docs/intro.md, part 5).
# python eg/chat_client.py NICK, then type lines; Ctrl-D (end of input) leaves.
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


class Client:
    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.me = aemp.port(line=lambda nick, text: print(f"<{nick}> {text}"))
        self.server: str | None = None  # the server we joined, or are joining
        self.joined = False  # True while the server we joined is there
        self.servers: Mapping[str, Any] = {}  # every server the database lists (a live view)

    async def servers_changed(
        self, family: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        self.servers = family
        if self.server is None and family:
            await self.join(next(iter(family)))

    async def join(self, server: str) -> None:
        self.server = server
        # the client's half of the mutual monitoring: notice when the server is gone
        aemp.mon(server, lambda *reason: self.lost(server, reason))
        try:
            _, count = await aemp.cal(server, "join", self.me, self.nick, timeout=5)
        except (aemp.PortDead, aemp.CallTimeout):
            return  # lost() takes it from here
        self.joined = True
        print(f"* joined the chat ({count} here)")

    async def lost(self, server: str, reason: tuple[Any, ...]) -> None:
        if server != self.server:
            return  # an old server's monitor
        if self.joined:  # said once, not again for each attempt to join while it is away
            print(f"* lost the server ({reason[0]}), waiting for it to come back")
        self.joined = False
        self.server = None
        await asyncio.sleep(1)  # the database may not have heard of it yet
        if self.server is None and self.servers:
            await self.join(next(iter(self.servers)))  # whichever server it lists

    def say(self, text: str) -> None:
        if self.server is None or not self.joined:
            print("* not connected, line dropped")
        else:
            aemp.snd(self.server, "say", self.me, text)


async def main(nick: str) -> None:
    node = await aemp.configure("chat_client", seeds=[SEED], secret=SECRET)
    async with node:
        client = Client(nick)
        aemp.db_mon("eg_chat", client.servers_changed)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
        while line := await reader.readline():
            client.say(line.decode().rstrip("\n"))


if __name__ == "__main__":
    try:
        aemp.run(main(sys.argv[1]))
    except KeyboardInterrupt:
        pass
