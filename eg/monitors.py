# eg/monitors.py: exceptions, port context and monitors on one node (docs/intro.md, part 4).
# Needs no seed: python eg/monitors.py
import asyncio

import aemp


def divide(a: float, b: float, reply: str) -> None:
    aemp.snd(reply, a / b)  # b == 0 raises: the port dies, the program goes on


async def fetch(url: str) -> None:
    await asyncio.sleep(0.01)  # stands for real I/O
    raise ConnectionError(f"cannot fetch {url}")  # still the port's own code


def report(name: str) -> aemp.MonCallback:
    return lambda *reason: print(f"monitor: {name} died with {reason}")


async def main() -> None:
    # 1. an exception kills the port it happened in, and the monitors say why
    calc = aemp.port(divide=divide)
    aemp.mon(calc, report("calc"))
    print("6 / 3 =", *await aemp.cal(calc, "divide", 6, 3))
    try:
        await aemp.cal(calc, "divide", 1, 0)
    except aemp.PortDead as e:
        print(f"cal: calc died with {e.reason}")
    aemp.snd(calc, "divide", 4, 2, calc)  # to a dead port: dropped, no error
    aemp.mon(calc, lambda *reason: print(f"monitor: too late, {reason[0]}"))
    await asyncio.sleep(0.1)

    # 2. an async callback is its port's code across every await
    fetcher = aemp.port(fetch=fetch)
    aemp.mon(fetcher, report("fetcher"))
    aemp.snd(fetcher, "fetch", "http://example.invalid/")
    await asyncio.sleep(0.1)

    # 3. mon(parent, child) links them: the child dies when the parent dies abnormally
    reasons: tuple[tuple[str, ...], ...] = ((), ("error", "disk full"))
    for reason in reasons:
        parent, child = aemp.port(print), aemp.port(print)
        aemp.mon(parent, child)
        aemp.mon(child, report(f"the child of a parent killed with {reason}"))
        aemp.kil(parent, *reason)
    await asyncio.sleep(0.1)


if __name__ == "__main__":
    aemp.run(main())
