# The configuration keys of a node, their validation, and the file.
#
# A Node takes these keys as keyword arguments and reads no file. Every key
# is checked here, so that a mistake is reported where it was made and
# names the key, what was expected and what came (attrs style), instead of
# surfacing later as a confusing failure deep in the transport.
#
# The file (JSON, $AEMP_CONFIG or ~/.config/aemp/config.json) holds a
# default section (the top-level keys) and named profiles, each of which
# may name a parent profile. configure() layers them: its own arguments
# lowest, then the default section, then the parent chain from the farthest
# ancestor down, then the profile itself (force=True puts the arguments on
# top). The file holds secrets, so it is written 0600 and only ever
# replaced whole, by rename; a file that cannot be read or parsed is
# reported with its name and the place of the fault, and never overwritten.

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._addr import parse_address, parse_bind
from ._errors import AempError, ConfigError, SpawnError
from ._targets import check_spawn_allow

AUTH_METHODS = ("tls_sha3_512", "hmac_sha3_512", "tls_anon", "cleartext")
FRAMINGS = ("msgpack", "json")


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration of one node (docs/api.md: the configuration keys)."""

    nodeid: str | None = None
    binds: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    secret: str | None = None
    cert: str | None = None
    network: str | None = None
    discovery: tuple[str, ...] = ()
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
    blocking_threads: int = 8
    queue_limit: int = 10_000
    send_buffer: int = 4 * 1024 * 1024
    max_unsent: int = 256 * 1024 * 1024
    stream_buffer: int = 1024 * 1024
    stall_timeout: float = 60.0
    handshake_timeout: float = 5.0
    max_handshakes: int = 256
    max_handshakes_per_address: int = 32
    listen_backlog: int = 1024
    max_objects: int = 4 * 1024 * 1024
    control: bool = False
    metrics: str | None = None
    names_url: str = "aemp://"

    @classmethod
    def from_keys(cls, keys: Mapping[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration key {unknown[0]!r}: "
                f"known keys are {', '.join(sorted(known))}"
            )
        config = cls(**{k: _CHECKS[k](k, v) for k, v in keys.items()})
        if config.max_unsent < config.send_buffer:
            raise ConfigError(
                f"'max_unsent' ({config.max_unsent}) must be at least 'send_buffer' "
                f"({config.send_buffer}): snd is refused past max_unsent, and drain() "
                "waits for the buffer to fall under a quarter of send_buffer"
            )
        return config


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


# Sane bounds of the numeric keys. Heartbeats go out every monitor_timeout/4,
# never faster than every 0.05 s, so a shorter timeout would take healthy
# links for dead ones; a day is far beyond any useful timeout or connect
# attempt; and no msgpack str or bin can be longer than 4 GiB - 1 bytes.
SECONDS_BOUNDS = {
    "monitor_timeout": (0.1, 86400.0),
    "connect_interval": (0.01, 86400.0),
    "stall_timeout": (0.1, 86400.0),
    "handshake_timeout": (0.1, 86400.0),
}
MAX_PACKET_BOUNDS = (1024, 2**32 - 1)
# aemp.blocking's threads per node: each holds a stack (8 MiB of address
# space on Linux), and more than a few hundred buy nothing but contention
BLOCKING_THREADS_BOUNDS = (1, 1024)


def _seconds(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ConfigError(f"{key!r} must be a positive number of seconds (got {v!r})")
    low, high = SECONDS_BOUNDS[key]
    if not low <= v <= high:  # inf and nan too
        raise ConfigError(
            f"{key!r} must be a finite number of seconds from {low:g} to {high:g} (got {v!r})"
        )
    return float(v)


def _names_url(key: str, v: Any) -> str:
    if not isinstance(v, str) or "://" not in v or v.startswith("://"):
        raise ConfigError(
            f"{key!r} must be a URL such as aemp:// or etcd://host:2379 (got {v!r:.80})"
        )
    return v


def _flag(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key!r} must be true or false (got {v!r}, a {_type_name(v)})")
    return v


def _size(key: str, v: Any) -> int:
    low, high = MAX_PACKET_BOUNDS
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{key!r} must be an int of at least {low} bytes (got {v!r})")
    if v > high:
        raise ConfigError(f"{key!r} must be at most {high} bytes (4 GiB - 1) (got {v!r})")
    return v


def _threads(key: str, v: Any) -> int:
    low, high = BLOCKING_THREADS_BOUNDS
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{key!r} must be an int from {low} to {high} (got {v!r})")
    return v


# Flow control: fewer than 100 held messages would pause reading at every
# burst; 2**30 messages would be far beyond any memory. A send buffer under
# 64 KiB is smaller than asyncio's own default high-water mark.
# Connections before authentication (docs/protocol.md, section 13): at least
# one, and no more than a process could hold open (a file descriptor each);
# Linux cuts a listen backlog down to net.core.somaxconn by itself.
COUNT_BOUNDS = {
    "queue_limit": (100, 2**30),
    "max_handshakes": (1, 1_000_000),
    "max_handshakes_per_address": (1, 1_000_000),
    "listen_backlog": (1, 65535),
    "max_objects": (1024, 2**32 - 1),  # as few as max_packet's least bytes; msgpack's most
}
BYTES_BOUNDS = {
    "send_buffer": (64 * 1024, 2**40),
    "max_unsent": (64 * 1024, 2**40),
    "stream_buffer": (64 * 1024, 2**40),
}


def _shown(v: Any) -> str:
    """repr(v) for an error, short: an int of thousands of digits has no repr."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() >= 64:
        return f"an int of {v.bit_length()} bits"
    text = repr(v)
    return text if len(text) <= 80 else f"{text[:80]}..."


def _count(key: str, v: Any) -> int:
    low, high = COUNT_BOUNDS[key]
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{key!r} must be an int from {low} to {high} (got {_shown(v)})")
    return v


def _bytes(key: str, v: Any) -> int:
    low, high = BYTES_BOUNDS[key]
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{key!r} must be an int of {low} to {high} bytes (got {_shown(v)})")
    return v


def _nodeid(key: str, v: Any) -> str | None:
    if v == "":
        raise ConfigError(
            f"{key!r} must not be empty (got {v!r}): give a node ID or template, "
            "or leave it out (None) for an anonymous node"
        )
    return _opt_str(key, v)


def _addresses(key: str, v: Any) -> tuple[str, ...]:
    out = _str_list(key, v)
    parse = parse_bind if key == "binds" else parse_address
    for addr in out:
        parse(addr, f"{key!r} entry")
    return out


# Discovery channels (aemp/discovery.py): a few at most, each a multicast
# group and port with its options. Announcements go out every `interval`
# seconds: more often than every 0.5 s would only load the LAN, less often
# than every 10 minutes would leave new nodes alone for too long.
MAX_DISCOVERY = 8
DISCOVERY_INTERVAL = 5.0
DISCOVERY_INTERVAL_BOUNDS = (0.5, 600.0)
DISCOVERY_WINDOW = 60.0  # how far a datagram's timestamp may be from our clock


@dataclasses.dataclass(frozen=True)
class DiscoverySpec:
    """One `discovery` entry, parsed: multicast:GROUP:PORT[;key=value]...

    ``interface`` is an IPv4 address of this host or an interface name
    (None: the system's choice); ``ttl`` how many routers a datagram may
    cross (1: this LAN segment only); ``interval`` the seconds between
    announcements; ``window`` how far a datagram's timestamp may lie from
    this host's clock (the clocks of a LAN's hosts should agree that well).
    """

    group: str
    port: int
    interface: str | None = None
    ttl: int = 1
    interval: float = DISCOVERY_INTERVAL
    window: float = DISCOVERY_WINDOW


def parse_discovery(spec: Any, key: str = "discovery") -> DiscoverySpec:
    """Check one `discovery` entry; ConfigError names what is wrong and what is right."""
    import ipaddress

    form = "'multicast:GROUP:PORT' with options ';interface=IF;ttl=N;interval=S;window=S'"
    if not isinstance(spec, str):
        raise ConfigError(f"{key!r} entry must be a str, {form} (got {_shown(spec)})")
    head, *options = spec.split(";")
    kind, _, rest = head.partition(":")
    group, _, port_text = rest.rpartition(":")
    if kind != "multicast" or not group or not port_text:
        raise ConfigError(f"{key!r} entry {spec!r} is not {form}")
    try:
        ip = ipaddress.ip_address(group)
    except ValueError:
        ip = None
    if not isinstance(ip, ipaddress.IPv4Address) or not ip.is_multicast:
        raise ConfigError(
            f"{key!r} entry {spec!r}: {group!r} is not an IPv4 multicast group "
            "(224.0.0.0 to 239.255.255.255; 239.x.x.x is for a site's own use)"
        )
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{key!r} entry {spec!r}: port {port_text!r} is not from 1 to 65535")
    values: dict[str, Any] = {}
    for option in options:
        name, eq, value = option.partition("=")
        if not eq or name not in ("interface", "ttl", "interval", "window") or name in values:
            raise ConfigError(
                f"{key!r} entry {spec!r}: option {option!r} is not one of interface=, ttl=, "
                "interval=, window= (each at most once)"
            )
        if name == "interface":
            if not value or not all(c.isalnum() or c in ".-_:@" for c in value):
                raise ConfigError(f"{key!r} entry {spec!r}: interface {value!r} is not a "
                                  "name or IPv4 address")  # fmt: skip
            values[name] = value
        elif name == "ttl":
            if not value.isdigit() or not 1 <= int(value) <= 255:
                raise ConfigError(f"{key!r} entry {spec!r}: ttl {value!r} is not from 1 to 255")
            values[name] = int(value)
        else:
            low, high = DISCOVERY_INTERVAL_BOUNDS if name == "interval" else (1.0, 86400.0)
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not low <= seconds <= high:
                raise ConfigError(f"{key!r} entry {spec!r}: {name} {value!r} is not a number of "
                                  f"seconds from {low:g} to {high:g}")  # fmt: skip
            values[name] = seconds
    return DiscoverySpec(str(ip), int(port_text), **values)


# A network id names one network among several on the same hosts: it goes
# into every greeting (docs/protocol.md, 3.1) and every discovery datagram,
# so it is as plain as a node ID and short.
NETWORK_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}\Z")


def _network(key: str, v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not NETWORK_RE.match(v):
        raise ConfigError(
            f"{key!r} must be None or 1 to 64 letters, digits and '_ . : / -' "
            f"(got {_shown(v)}{'' if isinstance(v, str) else ', a ' + _type_name(v)})"
        )
    return v


def _discovery(key: str, v: Any) -> tuple[str, ...]:
    out = _str_list(key, v)
    if len(out) > MAX_DISCOVERY:
        raise ConfigError(f"{key!r} holds {len(out)} channels, at most {MAX_DISCOVERY} allowed")
    for spec in out:
        parse_discovery(spec, key)
    return out


_NAME = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_SERVICE_RE = re.compile(rf"{_NAME}(:{_NAME})?\Z")


def _services(key: str, v: Any) -> tuple[Any, ...]:
    if not isinstance(v, list | tuple):
        raise ConfigError(f"{key!r} must be a list (got {v!r}, a {_type_name(v)})")
    for s in v:
        first = s[0] if isinstance(s, list | tuple) and s else s
        ok = isinstance(first, str) and bool(_SERVICE_RE.match(first))
        if ok and not isinstance(s, str):
            ok = ":" in first
        if not ok:
            raise ConfigError(
                f"{key!r} entry {s!r} must be 'pkg.mod:func', 'pkg.mod' "
                "or ['pkg.mod:func', args...]"
            )
    return tuple(v)


def _metrics(key: str, v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{key!r} must be an address 'host:port' or None (got {_shown(v)})")
    parse_bind(v, f"{key!r}")
    return v


def _spawn_allow(key: str, v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    entries = _str_list(key, v)
    for entry in entries:
        try:
            check_spawn_allow(entry)
        except SpawnError as e:
            raise ConfigError(str(e)) from None  # it names the key and the entry
    return entries


_CHECKS: dict[str, Any] = {
    "nodeid": _nodeid,
    "binds": _addresses,
    "seeds": _addresses,
    "secret": _opt_str,
    "cert": _opt_str,
    "network": _network,
    "discovery": _discovery,
    "services": _services,
    "monitor_timeout": _seconds,
    "connect_interval": _seconds,
    "framing_format": _choice_list(FRAMINGS),
    "auth_offer": _choice_list(AUTH_METHODS),
    "auth_accept": _choice_list(AUTH_METHODS),
    "nodelay": _flag,
    "secure": _flag,
    "spawn_allow": _spawn_allow,
    "max_packet": _size,
    "blocking_threads": _threads,
    "queue_limit": _count,
    "send_buffer": _bytes,
    "max_unsent": _bytes,
    "stream_buffer": _bytes,
    "stall_timeout": _seconds,
    "handshake_timeout": _seconds,
    "max_handshakes": _count,
    "max_handshakes_per_address": _count,
    "listen_backlog": _count,
    "max_objects": _count,
    "control": _flag,
    "metrics": _metrics,
    "names_url": _names_url,
}


# ---------------------------------------------------------------- one value


def check_value(key: str, value: Any) -> Any:
    """Check one value as the file holds it; return it in the form the file keeps.

    Beyond the Config checks, a node ID template must expand and a
    certificate must load, so that the aemp command refuses a bad value
    before it reaches the file.
    """
    check = _CHECKS.get(key)
    if check is None:
        raise ConfigError(
            f"unknown configuration key {key!r}: known keys are {', '.join(sorted(_CHECKS))}"
        )
    checked = check(key, value)
    if key == "nodeid" and checked is not None:
        from ._ids import expand_nodeid

        expand_nodeid(checked)
    elif key == "cert" and checked is not None:
        from .tls import ssl_contexts

        ssl_contexts(checked)
    if isinstance(checked, tuple):
        return [list(x) if isinstance(x, tuple) else x for x in checked]
    if isinstance(checked, float) and isinstance(value, int):
        return value  # 5 stays 5 in the file, not 5.0
    return checked


# ---------------------------------------------------------------- the file

FILE_VERSION = 1
_STRUCTURE = ("version", "profile")


def config_path() -> Path:
    """$AEMP_CONFIG if set, else ~/.config/aemp/config.json."""
    env = os.environ.get("AEMP_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".config" / "aemp" / "config.json"


def new_document() -> dict[str, Any]:
    return {"version": FILE_VERSION}


def _line_col(data: bytes, pos: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, pos) + 1
    return line, pos - (data.rfind(b"\n", 0, pos) + 1) + 1


def load_file(path: Path) -> dict[str, Any]:
    """Read the file and check its structure; a missing file is an empty one.

    Raises ConfigError naming the file, and the line and column of a JSON
    fault; values are checked later, per section (see file_keys).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return new_document()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(raw, e.start)
        raise ConfigError(f"{path}:{line}:{col}: not UTF-8 text (byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    check_structure(data, path)
    return data  # type: ignore[no-any-return]


def check_structure(data: Any, path: Path | str) -> None:
    """The shape of the document: an object, version 1, profiles as objects."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the configuration must be a JSON object (got a {_json_type(data)})"
        )
    version = data.get("version", FILE_VERSION)
    if version != FILE_VERSION or isinstance(version, bool):
        raise ConfigError(
            f'{path}: "version" is {version!r}: this aemp reads version {FILE_VERSION}'
        )
    profiles = data.get("profile", {})
    if not isinstance(profiles, dict):
        raise ConfigError(
            f'{path}: "profile" must be an object of profiles (got a {_json_type(profiles)})'
        )
    for name, section in profiles.items():
        if not name:
            raise ConfigError(f"{path}: a profile has an empty name")
        if not isinstance(section, dict):
            raise ConfigError(
                f"{path}: profile {name!r} must be an object (got a {_json_type(section)})"
            )
        parent = section.get("parent")
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ConfigError(
                f"{path}: profile {name!r}: 'parent' must be a profile name (got {parent!r})"
            )


def _json_type(v: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(v), "number")


def save_file(path: Path, data: Mapping[str, Any]) -> None:
    """Replace the file atomically: a temporary file beside it, fsync, rename.

    A new file gets mode 0600 (it holds secrets); an existing file keeps
    its mode. A symbolic link is followed, so the file it points to is
    replaced and the link stays.
    """
    check_structure(data, path)
    real = Path(os.path.realpath(path))
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = real.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600
    ordered = {"version": FILE_VERSION}
    ordered.update((k, v) for k, v in data.items() if k not in _STRUCTURE)
    ordered["profile"] = data.get("profile", {})
    text = json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(real.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - a directory we cannot open for reading
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- profiles


def profile_chain(data: Mapping[str, Any], profile: str, path: Path | str) -> list[str]:
    """The profile and its ancestors present in the file, farthest ancestor first.

    A profile that is not in the file is empty; a parent that is not in the
    file, or a loop of parents, is a ConfigError.
    """
    profiles = data.get("profile", {})
    chain: list[str] = []
    name: str | None = profile
    while name is not None:
        if name in chain:
            loop = " -> ".join(repr(n) for n in [*chain[chain.index(name) :], name])
            raise ConfigError(f"{path}: the parents of profile {profile!r} form a loop: {loop}")
        section = profiles.get(name)
        if section is None:
            if chain:
                raise ConfigError(
                    f"{path}: profile {chain[-1]!r} names parent {name!r}, "
                    "which is not a profile in the file"
                )
            return []
        chain.append(name)
        name = section.get("parent")
    chain.reverse()
    return chain


def _checked_section(
    section: Mapping[str, Any], where: str, skip: tuple[str, ...]
) -> dict[str, Any]:
    out = {}
    for key, value in section.items():
        if key in skip:
            continue
        try:
            out[key] = check_value(key, value)
        except AempError as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def file_layers(
    data: Mapping[str, Any], profile: str, path: Path | str
) -> list[tuple[str, dict[str, Any]]]:
    """The file's sections for a profile, lowest first, each with where it is:
    the default section, the parent chain from the farthest ancestor, the profile."""
    layers = [("default section", _checked_section(data, f"{path}: default section", _STRUCTURE))]
    for name in profile_chain(data, profile, path):
        section = data["profile"][name]
        where = f"profile {name!r}"
        layers.append((where, _checked_section(section, f"{path}: {where}", ("parent",))))
    return layers


def file_keys(data: Mapping[str, Any], profile: str, path: Path | str) -> dict[str, Any]:
    """The keys the file gives a profile: default section < parents < the profile."""
    out: dict[str, Any] = {}
    for _, keys in file_layers(data, profile, path):
        out.update(keys)
    return out


def check_document(data: Mapping[str, Any], path: Path | str) -> None:
    """Everything in the file, as the aemp command checks it before writing."""
    check_structure(data, path)
    _checked_section(data, f"{path}: default section", _STRUCTURE)
    for name, section in data.get("profile", {}).items():
        _checked_section(section, f"{path}: profile {name!r}", ("parent",))
        profile_chain(data, name, path)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The keys a node starts with, and where each came from.

    ``origins`` maps every key given to "program" (configure's arguments),
    "default section" or "profile 'NAME'" (of the file); a key in none is
    the built-in default (see origins_of). ``overridden`` lists the keys
    the program gave and the file replaced with another value, each as
    (key, the program's value, the file's value, where in the file).
    """

    keys: dict[str, Any]
    origins: dict[str, str]
    overridden: tuple[tuple[str, Any, Any, str], ...] = ()

    def origin(self, key: str) -> str:
        """Where `key` came from: one of the origins, else "default"."""
        return self.origins.get(key, "default")


def resolve(
    data: Mapping[str, Any],
    profile: str,
    args: Mapping[str, Any],
    *,
    force: bool = False,
    path: Path | str = "the configuration",
) -> Resolved:
    """configure's arguments layered with what the file gives the profile."""
    keys: dict[str, Any] = {}
    origins: dict[str, str] = {}
    layers = file_layers(data, profile, path)
    program = ("program", dict(args))
    for where, section in [program, *layers] if not force else [*layers, program]:
        keys.update(section)
        origins.update(dict.fromkeys(section, where))
    overridden = []
    for key, given in args.items():
        where = origins[key]
        if where != "program" and not _same(key, given, keys[key]):
            overridden.append((key, given, keys[key], where))
    if keys.get("nodeid") is None:
        keys["nodeid"] = f"{profile}/"
        origins["nodeid"] = "default (the profile name)"
    return Resolved(keys, origins, tuple(overridden))


def _same(key: str, a: Any, b: Any) -> bool:
    check = _CHECKS.get(key)
    if check is None:
        return bool(a == b)
    try:
        return bool(check(key, a) == check(key, b))
    except AempError:
        return False


def resolve_keys(
    data: Mapping[str, Any],
    profile: str,
    args: Mapping[str, Any],
    *,
    force: bool = False,
    path: Path | str = "the configuration",
) -> dict[str, Any]:
    """configure's arguments layered with what the file gives the profile."""
    return resolve(data, profile, args, force=force, path=path).keys


def effective(
    profile: str,
    args: Mapping[str, Any],
    *,
    norc: bool = False,
    force: bool = False,
    path: Path | None = None,
) -> tuple[Resolved, Path | None]:
    """What configure(profile=..., **args) starts a node with, and the file read
    (None with norc).

    configure's arguments lie below the file unless force is true; norc
    leaves the file out. Without a node ID anywhere it is "<profile>/"
    (the profile name and a random suffix).
    """
    if norc:
        return resolve({}, profile, args), None
    path = path or config_path()
    return resolve(load_file(path), profile, args, force=force, path=path), path


def effective_keys(
    profile: str,
    args: Mapping[str, Any],
    *,
    norc: bool = False,
    force: bool = False,
    path: Path | None = None,
) -> dict[str, Any]:
    """The keys configure(profile=..., **args) starts a node with (see effective)."""
    return effective(profile, args, norc=norc, force=force, path=path)[0].keys


def file_origin(path: Path) -> str:
    """The file's name, and that $AEMP_CONFIG named it, if it did."""
    return f"{path} (from $AEMP_CONFIG)" if os.environ.get("AEMP_CONFIG") else str(path)


def full_config(keys: Mapping[str, Any]) -> dict[str, Any]:
    """Every key with its value, built-in defaults included, in file form."""
    cfg = Config.from_keys(keys)
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return copy.deepcopy(v)
