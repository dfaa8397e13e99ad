# Family names and subkeys: what this node's own code may use, and what
# other nodes may send.
#
# A family name this node writes matches [A-Za-z][A-Za-z0-9_:.]* (docs/api.md,
# "The distributed database"); names starting with ' are the framework's
# ('l listeners, 'g global nodes) and may be read but not written. Names
# that come from other nodes are taken as any string of 1 to MAX_FAMILY
# characters, since other implementations are lax. A subkey is a str.
#
# The checks raise: InvalidFamily for this node's own code (a user's
# mistake), TypeError or ValueError for what a peer sent (the node request
# is then logged and ignored).
#
# May import only the leaves (aemp._errors) and the standard library.

from __future__ import annotations

import re
from typing import Any

from .._errors import InvalidFamily

Shard = dict[str, dict[str, Any]]  # family -> subkey -> value

_FAMILY = re.compile(r"[A-Za-z][A-Za-z0-9_:.]*\Z")
MAX_FAMILY = 1024  # characters, for names that come from other nodes


def check_family(family: object, *, write: bool) -> str:
    """A family name as docs/api.md says; reserved ('...) ones are read-only."""
    if type(family) is str:
        if _FAMILY.match(family):
            return family
        if family.startswith("'") and not write and valid_peer_family(family):
            return family
    what = "a family this node may write" if write else "a family name"
    raise InvalidFamily(
        f"{family!r} is not {what}: family names match [A-Za-z][A-Za-z0-9_:.]* "
        "(names starting with ' are the framework's and read-only)"
    )


def valid_peer_family(family: object) -> bool:
    """What a family name from another node may be (other implementations are lax)."""
    return type(family) is str and 0 < len(family) <= MAX_FAMILY


def check_subkey(key: object) -> str:
    """A subkey this node's own code passed: a str."""
    if type(key) is not str:
        raise InvalidFamily(f"subkey {key!r} is of type {type(key).__name__}: subkeys must be str")
    return key


def check_peer_family(family: Any) -> str:
    """A family name another node sent."""
    if not valid_peer_family(family):
        raise ValueError(
            f"{family!r:.80} is not a family name (a string of 1 to {MAX_FAMILY} characters)"
        )
    return str(family)


def check_entries(entries: Any) -> None:
    """A {subkey: value} object another node sent."""
    if type(entries) is not dict:
        raise TypeError(f"expected a {{subkey: value}} object, got {entries!r:.80}")
    for k in entries:
        if type(k) is not str:
            raise TypeError(f"subkey {k!r:.80} is not a string")


def check_keys(keys: Any) -> None:
    """A list of subkeys another node sent."""
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise TypeError(f"expected a list of subkeys, got {keys!r:.80}")


def check_shard(db: Any) -> Shard:
    """A whole {family: {subkey: value}} database another node sent."""
    if type(db) is not dict:
        raise TypeError(f"expected a {{family: {{subkey: value}}}} object, got {db!r:.80}")
    for family, entries in db.items():
        check_peer_family(family)
        check_entries(entries)
    return db
