"""The long fuzz run of the sans-IO core: ``python bench/bench_fuzz.py``.

Feeds at least ``--inputs`` (default 1,000,000) inputs, made as the CI
test makes them (tests/fuzz_wire.py: real packets of both framings,
mutated, split at random boundaries), to fresh decoders, and every 16th
one to an open ``wire.Connection`` through its fast path and its events.
The invariant: any input decodes into packets or raises
RemoteProtocolError, nothing else. Bounded in time (``--seconds``,
default 1800): a run that reaches the limit says so and fails.

Prints progress to stderr, then one JSON line: inputs, seconds, inputs/s,
failures (with the seed and input index that repeat each, the first 20).
Exit status 0 only if every input held the invariant and the count was
reached. Not in bench/run.py's list: it measures robustness, and has no
reference to compare with. Single process: the machine's other users keep
their cores.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fuzz_wire import FRAMINGS, check_input, make_input, open_connection, split  # noqa: E402

CONNECTION_EVERY = 16  # a handshake per input would dominate the run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=1800.0, help="give up after this long")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one")
    args = ap.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    rng = random.Random(seed)
    failures: list[str] = []
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    count = 0
    next_report = t0 + 10
    while count < args.inputs:
        framing = FRAMINGS[count % 2]
        data = make_input(rng, framing)
        conn = open_connection(framing) if count % CONNECTION_EVERY == 0 else None
        failure = check_input(framing, split(rng, data), conn)
        if failure is not None:
            failures.append(f"input {count} ({framing}, {data[:80]!r}): {failure}")
        count += 1
        if count % 1000 == 0:
            now = time.perf_counter()
            if now > deadline:
                break
            if now > next_report:
                print(f"{count} inputs, {count / (now - t0):.0f}/s", file=sys.stderr)
                next_report = now + 10
    seconds = time.perf_counter() - t0
    result = {
        "bench": "fuzz_wire",
        "seed": seed,
        "inputs": count,
        "seconds": round(seconds, 1),
        "inputs_per_s": round(count / seconds),
        "failures": len(failures),
        "first_failures": failures[:20],
        "complete": count >= args.inputs,
    }
    print(json.dumps(result))
    return 0 if not failures and count >= args.inputs else 1


if __name__ == "__main__":
    sys.exit(main())
