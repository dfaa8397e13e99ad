# eg/blocking.py: slow work in threads and processes, the node alive (docs/intro.md, part 8).
# Needs no seed: python eg/blocking.py
import concurrent.futures
import time

import aemp


def save(name: str, seconds: float) -> None:
    time.sleep(seconds)  # stands for a slow disk, a blocking library, a long request
    print(f"saved {name}")


def count_primes(limit: int) -> int:  # pure Python, CPU-bound: worth a process of its own
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


async def main() -> None:
    # 1. blocking work in a thread: the port still takes one message at a time
    saver = aemp.port(save=aemp.blocking(save), flush=lambda reply: aemp.snd(reply, "flushed"))
    for name in ("a", "b", "c"):
        aemp.snd(saver, "save", name, 0.3)

    # ... while the node goes on: other ports answer, heartbeats go out
    echo = aemp.port(ping=lambda reply: aemp.snd(reply, "pong"))
    print(*await aemp.cal(echo, "ping"), "while the saver works")

    # the flush waited in the saver's backlog behind the three saves
    print(*await aemp.cal(saver, "flush"), "after every save")

    # 2. a service that answers with the result of work in another process
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:

        async def primes(limit: int, reply: str) -> None:
            aemp.snd(reply, await aemp.run_blocking(count_primes, limit, executor=pool))

        counter = aemp.port(primes=primes)
        print("primes below 50000:", *await aemp.cal(counter, "primes", 50_000))


if __name__ == "__main__":
    aemp.run(main())
