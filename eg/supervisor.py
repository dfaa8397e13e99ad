# eg/supervisor.py: restart workers on other nodes when they die (docs/intro.md, part 9).
# Start host nodes first, then: python eg/supervisor.py host1 host2
import os
import sys

import aemp
from aemp.supervisor import Child, Event, Supervisor

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
WORKERS = 2


@aemp.spawnable  # other nodes may start it with spawn()
def worker(name: str) -> None:
    """Runs on a host, as the spawned port: doubles numbers, crashes when asked to."""

    def work(n: int, reply: str) -> None:
        aemp.snd(reply, name, n * 2)

    def crash() -> None:
        raise RuntimeError(f"{name} was asked to crash")

    me = aemp.rcv(aemp.self_port(), work=work, crash=crash)
    aemp.db_reg("eg_supervised", me, name)  # so that others can find it


def show(event: Event) -> None:
    """What the supervisor does, as it happens."""
    if event.kind in ("started", "restarted"):
        print(f"supervisor: {event.child} {event.kind} on {event.node} as {event.port}")
    elif event.kind == "moved":
        print(f"supervisor: {event.child} moved to {event.node} as {event.port}")
    elif event.kind == "exited":
        print(f"supervisor: {event.child} died with {event.reason[:2]}")
    elif event.kind == "waiting":
        print(f"supervisor: {event.child} waits for a host")
    elif event.kind == "gave_up":
        print(f"supervisor: giving up, {event.reason[1]}")


async def main(hosts: list[str]) -> None:
    node = await aemp.configure("supervisor", seeds=[SEED], secret=SECRET)
    async with node:
        workers = [
            Child(f"w{i + 1}", "eg.supervisor:worker", (f"w{i + 1}",)) for i in range(WORKERS)
        ]
        # more than 3 restarts within 10 seconds: it gives up, and its workers end with it
        supervisor = Supervisor(workers, hosts=hosts, max_restarts=3, period=10, on_event=show)
        await supervisor.wait_closed()  # or Ctrl-C


if __name__ == "__main__":
    try:
        aemp.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
