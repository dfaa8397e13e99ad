# Node IDs and port IDs: parse, validate, generate.
#
# A port ID is "NODEID#NAME", split at the first "#"; the node ID alone is
# the node port. Port names are never reused, even by a node restarted under
# the same node ID, because every node incarnation draws a fresh random
# prefix: local ports are PREFIX + counter (9 random characters), spawned
# ports are RPREFIX + counter (10 random characters, the last upper-case),
# the counter running a, b, ..., z, aa, ab, ... So the tenth character of a
# local name is lower-case and that of a spawned name upper-case: the two
# families never collide, exactly as AnyEvent::MP names them.
#
# cal's reply ports are a third family: 10 random characters, the last a
# digit, then a counter and 16 random hex digits. Whoever sees one reply
# port cannot guess the next (a peer could otherwise answer a call meant for
# another node), and the counter keeps them unique. The random digits come
# from os.urandom in blocks of 256 names, so a name costs about 0.15 us.

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import string
from collections.abc import Iterator

from ._errors import InvalidID

_ALNUM = string.ascii_letters + string.digits
_NODEID_RE = re.compile(r"[A-Za-z0-9_\-.:/]+\Z")
_NODEID_TEMPLATE_RE = re.compile(r"[A-Za-z0-9_\-.:/%]+\Z")


def random_string(n: int) -> str:
    """n random letters and digits from the OS's CSPRNG."""
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def local_prefix() -> str:
    return random_string(9)


def spawn_prefix() -> str:
    return random_string(9) + secrets.choice(string.ascii_uppercase)


def reply_prefix() -> str:
    return random_string(9) + secrets.choice(string.digits)


def counter_names(prefix: str) -> Iterator[str]:
    """prefix+"a", prefix+"b", ..., prefix+"z", prefix+"aa", ... forever.

    A chain over blocks of 26, so that next() stays in C for 25 names of
    26: every port and every cal takes one.
    """
    return itertools.chain.from_iterable(_name_blocks(prefix))


def _name_blocks(prefix: str) -> Iterator[list[str]]:
    letters = string.ascii_lowercase
    yield [prefix + c for c in letters]
    # the heads of the longer names are the names themselves, in order
    for head in counter_names(prefix):
        yield [head + c for c in letters]


SECRET_DIGITS = 16  # hex digits, 64 random bits, at the end of a reply port name
_SECRET_BLOCK = 256  # names per os.urandom call


def secret_names(prefix: str) -> Iterator[str]:
    """prefix + counter + SECRET_DIGITS random hex digits, forever; unguessable.

    The counter counts blocks of names, and the random parts of one block
    are distinct, so a name never repeats: two equal names would have
    counters of the same length (the random part has a fixed one), so the
    same counter, so the same block.
    """
    return itertools.chain.from_iterable(_secret_blocks(prefix))


def _secret_blocks(prefix: str) -> Iterator[list[str]]:
    for head in counter_names(prefix):
        # in C: one system call, then split into groups of 8 bytes' hex
        digits = os.urandom(_SECRET_BLOCK * SECRET_DIGITS // 2).hex(" ", SECRET_DIGITS // 2)
        tails = digits.split()
        if len(set(tails)) == _SECRET_BLOCK:  # else (about 1 in 10**14) draw again
            yield list(map(head.__add__, tails))


def check_nodeid(nodeid: object, what: str = "node ID") -> str:
    """Validate a node ID of our own making (configuration)."""
    if not isinstance(nodeid, str):
        raise InvalidID(f"{what} must be a str (got {nodeid!r}, a {type(nodeid).__name__})")
    if not _NODEID_RE.match(nodeid):
        raise InvalidID(
            f"{what} {nodeid!r} is not valid: use letters, digits and _ - . : / only "
            "(no '#', ';' or white space), at least one character"
        )
    return nodeid


def expand_nodeid(template: str, profile: str | None = None) -> str:
    """Expand %n (host name), %u (random) and a trailing "/" (random suffix)."""
    if not isinstance(template, str) or not _NODEID_TEMPLATE_RE.match(template):
        raise InvalidID(
            f"node ID template {template!r} is not valid: use letters, digits, _ - . : / "
            "and the templates %n (host name) and %u (random string)"
        )
    out = template.replace("%n", socket.gethostname()).replace("%u", random_string(10))
    if out.endswith("/"):
        out += random_string(10)
    if "%" in out:
        raise InvalidID(f"node ID template {template!r} has an unknown %-escape: use %n or %u")
    return check_nodeid(out)


def check_port_id(port: object) -> str:
    """Validate a port ID (or node ID) given to snd, mon, kil and friends."""
    if type(port) is not str:
        raise InvalidID(
            f"port ID must be a str like 'node#name' (got {port!r}, a {type(port).__name__})"
        )
    if (
        not port
        or port[0] == "#"
        or " " in port
        or ";" in port
        or "\n" in port
        or "\t" in port
        or "\r" in port
    ):
        raise InvalidID(f"port ID {port!r} is malformed: expected 'NODEID#NAME' or 'NODEID'")
    return port


def node_of(port: str) -> str:
    """The node ID part of a port ID (a node ID is returned unchanged)."""
    check_port_id(port)
    return port.partition("#")[0]
