# eg/stream_copy.py: bulk bytes over a data stream, nodes on a unix socket (docs/intro.md, part 14).
# Needs no seed: python eg/stream_copy.py
import asyncio
import hashlib
import tempfile

import aemp
from aemp.streams import Stream, open_stream


@aemp.spawnable  # runs on the store, in a port of its own, with the stream's other end
async def store(name: str, reply: str, stream: Stream) -> None:
    digest = hashlib.sha256()
    async with stream:
        while chunk := await stream.receive_some():
            digest.update(chunk)  # a real store would write it to disk here
    aemp.snd(reply, "stored", name, stream.bytes_received, digest.hexdigest()[:16])


def not_for_streams(stream: Stream) -> None:  # not @spawnable: other nodes may not run it
    pass


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="aemp-") as tmp:
        sock = f"unix:{tmp}/store.sock"
        async with (
            aemp.Node(nodeid="store", binds=[sock], secret="tutorial") as store_node,
            aemp.Node(nodeid="client", seeds=[sock], secret="tutorial") as client,
        ):
            print("store listens on", store_node.listeners[0].replace(tmp, "$TMP"))
            answer = asyncio.get_running_loop().create_future()
            reply = client.port(lambda *msg: answer.set_result(msg))

            stream = await open_stream(client, "store", "__main__:store", "data.bin", reply)
            digest = hashlib.sha256()
            chunk = bytes(range(256)) * 4096  # 1 MiB
            async with stream:
                for _ in range(64):
                    await stream.send_all(chunk)  # waits while the store lags behind
                    digest.update(chunk)
            print("client: sent", stream.bytes_sent, "bytes", digest.hexdigest()[:16])
            print("store:", *await answer)

            try:
                await open_stream(client, "store", "__main__:not_for_streams")
            except aemp.SpawnRefused as e:
                print("refused:", str(e).split(" (")[0])


if __name__ == "__main__":
    aemp.run(main())
