"""The sans-IO core's data phase, fuzzed for a few seconds in every run:
real packets of both framings, mutated, fed split at random boundaries to
the decoders and to open connections. Any input decodes into packets or
raises RemoteProtocolError, nothing else (tests/fuzz_wire.py says how the
inputs are made; bench/bench_fuzz.py is the long run). The seed changes
from run to run and is in the failure message; AEMP_FUZZ_SEED repeats it."""

from __future__ import annotations

import os
import random
import time

import pytest
from fuzz_wire import FRAMINGS, check_input, make_input, open_connection, split

SECONDS = 1.5  # per framing and path: about 6 s in all


@pytest.mark.parametrize("via", ["decoder", "connection"])
@pytest.mark.parametrize("framing", FRAMINGS)
def test_fuzz_data_phase(framing: str, via: str) -> None:
    seed = int(os.environ.get("AEMP_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    deadline = time.monotonic() + SECONDS
    count = 0
    while time.monotonic() < deadline:
        data = make_input(rng, framing)
        conn = open_connection(framing) if via == "connection" else None
        failure = check_input(framing, split(rng, data), conn)
        assert failure is None, f"seed {seed}, input {count} ({data[:200]!r}): {failure}"
        count += 1
    assert count > 100, count  # the run did fuzz


def test_the_inputs_reach_the_limits_and_decode_too() -> None:
    # the inputs are not all refused at the first byte: some decode whole,
    # and some hit the value limit, in each framing
    from fuzz_wire import FUZZ_MAX_OBJECTS, FUZZ_MAX_PACKET

    from aemp import RemoteProtocolError, wire

    for framing in FRAMINGS:
        rng = random.Random(13)
        seen: set[str] = set()
        for _ in range(3000):
            decoder = wire.make_decoder(framing, FUZZ_MAX_PACKET, FUZZ_MAX_OBJECTS)
            try:
                for piece in split(rng, make_input(rng, framing)):
                    if decoder.feed(piece):
                        seen.add("packets")
            except RemoteProtocolError as exc:
                seen.add("max_objects" if "max_objects" in str(exc) else "refused")
        assert seen == {"packets", "max_objects", "refused"}, (framing, seen)
