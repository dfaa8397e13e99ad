# eg/receiver.py: a port that prints the greetings it gets (docs/intro.md, parts 1 and 3).
# Start the seed first, then: python eg/receiver.py
import asyncio
import os

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


def hello(text: str, sender: str) -> None:
    print(f"receiver: {text!r} from {sender}")


async def main() -> None:
    node = await aemp.configure("receiver", binds=["127.0.0.1:0"], seeds=[SEED], secret=SECRET)
    async with node:
        inbox = aemp.port(hello=hello)
        aemp.db_reg("eg_receivers", inbox)  # part 3: so that senders can find it
        print(f"receiver: my port is {inbox}")
        await asyncio.Event().wait()  # serve until Ctrl-C


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        pass
