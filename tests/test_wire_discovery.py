"""The discovery datagram (aemp.wire: encode_announcement, Verifier), in memory.

Each refusal reason has its case; then the fuzz: 100,000 inputs made from
real announcements (of our network and key, of another network, with
another secret), mutated. The invariant: check() returns an Announcement
only for a datagram that encode_announcement made with our key and that
was not accepted before, and otherwise raises AnnouncementRefused, nothing
else. The seed changes from run to run and is in the failure message;
AEMP_FUZZ_SEED repeats it.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from aemp import RemoteProtocolError, wire
from aemp.wire._discovery import MAX_DATAGRAM, MAX_KNOWN, REASONS

KEY = wire.discovery_key(b"the-secret", "lab")
NOW = 1_800_000_000_000  # ms
WINDOW = 60_000


def announce(
    nodeid: str = "n1",
    ms: int = NOW,
    *,
    key: bytes = KEY,
    network: str | None = "lab",
    addrs: tuple[str, ...] = ("10.9.0.1:4040",),
    nonce: str = "0123456789abcdef",
) -> bytes:
    return wire.encode_announcement(key, nodeid, network, addrs, ms, nonce)


def refused(verifier: wire.Verifier, data: bytes, now: int = NOW) -> str:
    with pytest.raises(wire.AnnouncementRefused) as info:
        verifier.check(data, now)
    assert isinstance(info.value, RemoteProtocolError)
    return info.value.reason


def test_a_good_announcement_round_trips() -> None:
    addrs = ("10.9.0.1:4040", "[fe80::1%veth0]:4041", "host-a.lan:7")
    data = announce(addrs=addrs)
    assert data.startswith(b"aemp-discovery;1;lab;n1;1800000000000;0123456789abcdef;")
    ann = wire.Verifier(KEY, "lab", WINDOW).check(data, NOW + 1000)
    assert ann == wire.Announcement("n1", "lab", addrs, NOW, "0123456789abcdef")


def test_each_refusal_has_its_reason() -> None:
    v = wire.Verifier(KEY, "lab", WINDOW)
    assert refused(v, b"hello") == "malformed"
    assert refused(v, announce()[:-1]) == "malformed"  # the tag cut short
    assert refused(v, announce().replace(b";1;", b";2;", 1)) == "malformed"
    other = wire.discovery_key(b"the-secret", "prod")
    assert refused(v, announce(key=other, network="prod")) == "network"
    assert refused(v, announce(key=other, network="x" * 64, nodeid="n" * 200)) == "network"
    assert refused(v, announce(network=None, key=wire.discovery_key(b"the-secret", None))) == (
        "network"
    )
    wrong_secret = wire.discovery_key(b"another-secret", "lab")
    assert refused(v, announce(key=wrong_secret)) == "forged"
    # changing any covered field breaks the tag
    assert refused(v, announce().replace(b"10.9.0.1", b"10.9.0.2")) == "forged"
    assert refused(v, announce(ms=NOW - WINDOW - 1)) == "stale"
    assert refused(v, announce(ms=NOW + WINDOW + 1)) == "stale"
    assert sorted({"malformed", "network", "forged", "stale", "replayed"}) == sorted(REASONS)


def test_a_replay_is_refused_and_only_newer_ones_pass() -> None:
    v = wire.Verifier(KEY, "lab", WINDOW)
    first, later = announce(ms=NOW), announce(ms=NOW + 5000)
    v.check(later, NOW)
    assert refused(v, later) == "replayed"
    assert refused(v, first) == "replayed"  # older than one accepted
    v.check(announce(ms=NOW + 5001), NOW)
    v.check(announce("n2", ms=NOW), NOW)  # another node's time is its own
    assert len(v) == 2
    # the receiver's own, looped back (from two channels, say): no replay check
    assert v.check(announce("me"), NOW, own="me") == v.check(announce("me"), NOW, own="me")
    assert len(v) == 2


def test_the_table_of_times_is_bounded() -> None:
    v = wire.Verifier(KEY, "lab", WINDOW)
    for i in range(MAX_KNOWN + 50):
        v.check(announce(f"n{i}"), NOW)
    assert len(v) == MAX_KNOWN
    # the oldest entries went (their times still within the window): the
    # newest ones still refuse a replay
    assert refused(v, announce(f"n{MAX_KNOWN + 49}")) == "replayed"


def test_addresses_are_trimmed_to_fit_and_bad_fields_refused() -> None:
    many = tuple(f"[fd00:aaaa:bbbb:cccc:dddd:eeee:ffff:{i:04x}]:40400" for i in range(16))
    data = announce(addrs=many)
    assert len(data) <= MAX_DATAGRAM
    ann = wire.Verifier(KEY, "lab", WINDOW).check(data, NOW)
    assert 0 < len(ann.addresses) <= 16 and ann.addresses == many[: len(ann.addresses)]
    for bad in [
        {"nodeid": "a;b"},
        {"nodeid": "a b"},
        {"nodeid": "x#y"},
        {"addrs": ("no-port",)},
        {"addrs": ("h:0",)},
        {"addrs": ("h:70000",)},
        {"network": "a;b"},
        {"nonce": "xyz"},
        {"ms": -1},
    ]:
        with pytest.raises(ValueError):
            announce(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be announced"):
        announce("n" * 201)
    longest = announce("n" * 200, addrs=(), network="x" * 64)
    assert len(longest) <= MAX_DATAGRAM


def test_a_datagram_too_big_is_refused_unread() -> None:
    v = wire.Verifier(KEY, "lab", WINDOW)
    assert refused(v, announce() + b"x" * MAX_DATAGRAM) == "malformed"


# ---------------------------------------------------------------- the fuzz

FUZZ_INPUTS = 100_000
_PIECES = [b";", b",", b":", b"0", b"f", b"\xff", b"\x00", b" ", b"#", b"[", b"]", b"lab", b"1"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(7)
        pos = rng.randrange(len(b) + 1)
        if kind == 0 and b:  # flip a byte
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert a separator or a digit
            b[pos:pos] = rng.choice(_PIECES)
        elif kind == 2:  # delete a run
            del b[pos : pos + rng.randrange(1, 12)]
        elif kind == 3:  # cut off
            del b[pos:]
        elif kind == 4:  # repeat a run
            b[pos:pos] = b[pos : pos + rng.randrange(1, 40)] * rng.randrange(1, 30)
        elif kind == 5:  # swap two fields
            parts = bytes(b).split(b";")
            i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
            parts[i], parts[j] = parts[j], parts[i]
            b = bytearray(b";".join(parts))
        else:  # random bytes
            b[pos:pos] = rng.randbytes(rng.randrange(1, 20))
    return bytes(b)


def _genuine(rng: random.Random, n: int) -> bytes:
    addrs = tuple(
        rng.choice(["10.9.0.%d:4040", "[fd00::%x]:1", "h%d.lan:65535"]) % rng.randrange(256)
        for _ in range(rng.randrange(4))
    )
    ms = NOW + n
    nonce = f"{rng.getrandbits(64):016x}"
    kind = rng.randrange(6)
    if kind == 0:  # another network with the same secret
        return announce(f"n{n % 7}", ms, key=wire.discovery_key(b"the-secret", "o"),
                        network="o", addrs=addrs, nonce=nonce)  # fmt: skip
    if kind == 1:  # our network, another secret
        return announce(f"n{n % 7}", ms, key=wire.discovery_key(b"x", "lab"),
                        addrs=addrs, nonce=nonce)  # fmt: skip
    return announce(f"n{n % 7}", ms, addrs=addrs, nonce=nonce)


def test_fuzz_the_verifier() -> None:
    seed = int(os.environ.get("AEMP_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    verifier = wire.Verifier(KEY, "lab", WINDOW)
    ours: set[bytes] = set()  # every datagram made with our key for our network
    accepted: set[bytes] = set()
    recent: list[bytes] = []
    reasons: dict[str, int] = {}
    started = time.monotonic()
    for n in range(FUZZ_INPUTS):
        data = _genuine(rng, n)
        if data.split(b";")[2] == b"lab":
            ours.add(data)
            recent.append(data)
        luck = rng.random()
        if luck < 0.03 and recent:  # a capture, replayed
            data = recent[rng.randrange(max(0, len(recent) - 50), len(recent))]
        elif luck < 0.93:
            data = _mutate(rng, data)
        try:
            ann = verifier.check(data, NOW + rng.randrange(-2 * WINDOW, 2 * WINDOW))
        except wire.AnnouncementRefused as exc:
            assert exc.reason in REASONS, f"seed {seed}, input {n}: {exc.reason}"
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
        except Exception as exc:  # the invariant: nothing else
            raise AssertionError(f"seed {seed}, input {n} ({data[:200]!r}): {exc!r}") from exc
        else:
            assert data not in accepted, f"seed {seed}, input {n}: accepted twice: {data!r}"
            assert data in ours, f"seed {seed}, input {n}: a forgery passed: {data!r}"
            assert ann.nodeid.startswith("n") and ann.network == "lab"
            accepted.add(data)
    # the inputs reach every check, and some pass
    assert set(reasons) == set(REASONS), (seed, reasons)
    assert accepted, seed
    assert time.monotonic() - started < 60  # fast enough for every run


def test_the_example_of_docs_protocol_md_is_right() -> None:
    import hashlib
    import hmac
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    m = re.search(r"<!-- discovery-example: secret=(\S+) -->\n```text\n(.*)\n```", page)
    assert m, "no discovery example on the page"
    secret, line = m.group(1).encode(), m.group(2).encode()
    body, tag = line[: line.rindex(b";") + 1], line[line.rindex(b";") + 1 :]
    network = line.split(b";")[2]
    key = hmac.new(secret, b"aemp discovery key;" + network, hashlib.sha3_256).digest()
    assert hmac.new(key, body, hashlib.sha3_256).hexdigest().encode() == tag
    # and aemp.wire makes the same bytes and takes them
    ann = wire.parse_announcement(line)[0]
    made = wire.encode_announcement(
        wire.discovery_key(secret, ann.network), ann.nodeid, ann.network, ann.addresses,
        ann.time_ms, ann.nonce,
    )  # fmt: skip
    assert made == line
    v = wire.Verifier(wire.discovery_key(secret, "lab"), "lab", WINDOW)
    assert v.check(line, ann.time_ms) == ann
