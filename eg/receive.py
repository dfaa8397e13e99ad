# eg/receive.py: coroutines that receive selectively (docs/intro.md, part 11).
# Needs no seed: python eg/receive.py
import aemp
from aemp.mailbox import Mailbox, ReceiveTimeout, receiving


@aemp.spawnable
@receiving
async def kitchen(box: Mailbox, name: str) -> None:
    """Cooks the orders in turn, but an urgent one before any other."""
    while True:
        try:
            msg = await box.receive("urgent", timeout=0)  # only what came already
        except ReceiveTimeout:
            msg = await box.receive("order", "urgent", "close", timeout=5)
        if msg[0] == "close":
            print(f"{name}: closing")
            return  # the port exits normally
        _, dish, reply = msg
        print(f"{name}: cooking {dish}")
        aemp.snd(reply, "served", dish)


async def main() -> None:
    me = Mailbox()  # this coroutine's own port
    cook = aemp.spawn(aemp.NODE(), "__main__:kitchen", "kitchen")
    aemp.mon(cook, me.port, "closed")  # ("closed", *reason) when it ends
    aemp.snd(cook, "order", "soup", me.port)
    aemp.snd(cook, "order", "steak", me.port)
    aemp.snd(cook, "urgent", "water", me.port)
    aemp.snd(cook, "close")

    # the steak first, whenever it comes; the other dishes wait in order
    print("customer got", await me.receive("served", where=lambda tag, dish: dish == "steak"))
    print("customer got", await me.receive("served"), await me.receive("served"))
    print("kitchen ended with", await me.receive("closed"))
    try:
        await me.receive("served", timeout=0.5)
    except ReceiveTimeout as e:
        print(f"no more dishes within {e.timeout} s")


if __name__ == "__main__":
    aemp.run(main())
