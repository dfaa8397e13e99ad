# eg/chat_server.py: a chat room that clients find in the database (docs/intro.md, part 5).
# python eg/chat_server.py; stop it, start it again: the clients come back by themselves.
import asyncio
import os

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")

members: dict[str, str] = {}  # client port -> nick


def say_all(nick: str, text: str) -> None:
    print(f"<{nick}> {text}")
    for client in members:
        aemp.snd(client, "line", nick, text)


def join(client: str, nick: str, reply: str) -> None:
    members[client] = nick
    # the server's half of the mutual monitoring: forget a client that is gone
    aemp.mon(client, lambda *reason: leave(client))
    aemp.snd(reply, "welcome", len(members))
    say_all("*", f"{nick} joined")


def leave(client: str) -> None:
    nick = members.pop(client, None)
    if nick is not None:
        say_all("*", f"{nick} left")


def say(client: str, text: str) -> None:
    if client in members:
        say_all(members[client], text)


async def main() -> None:
    node = await aemp.configure("chat_server", binds=["127.0.0.1:0"], seeds=[SEED], secret=SECRET)
    async with node:
        server = aemp.port(join=join, say=say)
        aemp.db_reg("eg_chat", server)  # a restarted server registers again
        print(f"chat server: ready at {server}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        pass
