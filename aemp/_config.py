# The configuration keys of a node and their validation.
#
# A Node takes these keys as keyword arguments and reads no file. Every key
# is checked once, here, so that a mistake is reported where it was made and
# names the key, what was expected and what came (attrs style), instead of
# surfacing later as a confusing failure deep in the transport.

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigError

AUTH_METHODS = ("tls_sha3_512", "hmac_sha3_512", "tls_anon", "cleartext")
FRAMINGS = ("msgpack", "json")


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration of one node (DESIGN section 5)."""

    nodeid: str | None = None
    binds: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    secret: str | None = None
    cert: str | None = None
    services: tuple[Any, ...] = ()
    monitor_timeout: float = 30.0
    connect_interval: float = 2.0
    framing_format: tuple[str, ...] = FRAMINGS
    auth_offer: tuple[str, ...] = ("tls_sha3_512", "hmac_sha3_512")
    auth_accept: tuple[str, ...] = ("tls_sha3_512", "hmac_sha3_512")
    nodelay: bool = True
    secure: bool = False
    spawn_allow: tuple[str, ...] | None = None
    max_packet: int = 64 * 1024 * 1024

    @classmethod
    def from_keys(cls, keys: Mapping[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration key {unknown[0]!r}: "
                f"known keys are {', '.join(sorted(known))}"
            )
        return cls(**{k: _CHECKS[k](k, v) for k, v in keys.items()})


def _type_name(v: object) -> str:
    return type(v).__name__


def _opt_str(key: str, v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ConfigError(f"{key!r} must be a str or None (got {v!r}, a {_type_name(v)})")


def _str_list(key: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [x for x in v.split(",") if x]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key!r} must be a list of str (got {v!r}, a {_type_name(v)})")
    return tuple(v)


def _choice_list(allowed: tuple[str, ...]) -> Any:
    def check(key: str, v: Any) -> tuple[str, ...]:
        out = _str_list(key, v)
        for x in out:
            if x not in allowed:
                raise ConfigError(f"{key!r} holds {x!r}: expected some of {', '.join(allowed)}")
        if not out:
            raise ConfigError(f"{key!r} must not be empty: expected some of {', '.join(allowed)}")
        return out

    return check


def _positive(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ConfigError(f"{key!r} must be a positive number of seconds (got {v!r})")
    return float(v)


def _flag(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key!r} must be true or false (got {v!r}, a {_type_name(v)})")
    return v


def _size(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1024:
        raise ConfigError(f"{key!r} must be an int of at least 1024 bytes (got {v!r})")
    return v


def _services(key: str, v: Any) -> tuple[Any, ...]:
    if not isinstance(v, list | tuple):
        raise ConfigError(f"{key!r} must be a list (got {v!r}, a {_type_name(v)})")
    for s in v:
        ok = isinstance(s, str) or (
            isinstance(s, list | tuple) and len(s) >= 1 and isinstance(s[0], str)
        )
        if not ok:
            raise ConfigError(
                f"{key!r} entry {s!r} must be 'pkg.mod:func', 'pkg.mod' "
                "or ['pkg.mod:func', args...]"
            )
    return tuple(v)


def _opt_str_list(key: str, v: Any) -> tuple[str, ...] | None:
    return None if v is None else _str_list(key, v)


_CHECKS: dict[str, Any] = {
    "nodeid": _opt_str,
    "binds": _str_list,
    "seeds": _str_list,
    "secret": _opt_str,
    "cert": _opt_str,
    "services": _services,
    "monitor_timeout": _positive,
    "connect_interval": _positive,
    "framing_format": _choice_list(FRAMINGS),
    "auth_offer": _choice_list(AUTH_METHODS),
    "auth_accept": _choice_list(AUTH_METHODS),
    "nodelay": _flag,
    "secure": _flag,
    "spawn_allow": _opt_str_list,
    "max_packet": _size,
}
