# Addresses of nodes: the one parser of "host:port" for binds, seeds and
# dialling, the one way to write one, and the addresses a listener is
# published under. A leaf: configuration checks its values with it before
# any network exists, and the network dials and listens with it.
#
# A bind may name any host ("*" or "") and any port ("*" or "0"); an
# address to dial needs both. IPv6 hosts are written in brackets. A bind to
# every interface is published under each of this host's addresses
# (aemp/_ifaddrs.py), the loopback ones last: they reach the node only
# from its own host.
#
# "unix:/path" names a unix-domain socket, as a bind and as an address to
# dial. Its path is absolute (a relative one would mean something else in
# every process) and short enough for the kernel's sun_path. Unix
# addresses are published after every TCP one: a node elsewhere cannot
# reach them, and a Perl node tries the TCP ones first. A node dials a
# unix address only where the path is a socket on its own host, and then
# before the TCP ones (dial_order): same host, no TCP stack in between.

from __future__ import annotations

import ipaddress
import os
import socket
import stat

from ._errors import ConfigError
from ._ifaddrs import host_addresses

__all__ = [
    "UNIX",
    "dial_order",
    "format_address",
    "host_addresses",
    "is_unix",
    "listen_addresses",
    "parse_address",
    "parse_bind",
    "parse_unix",
]

UNIX = "unix:"
# sun_path holds 108 bytes on Linux (104 on the BSDs), the final NUL included
MAX_UNIX_PATH = 103


def is_unix(addr: str) -> bool:
    """True for a "unix:/path" address or bind."""
    return addr.startswith(UNIX)


def parse_unix(addr: str, what: str = "address") -> str:
    """The path of "unix:/path": absolute, without NUL, at most MAX_UNIX_PATH bytes."""
    path = addr[len(UNIX) :]
    if not path.startswith("/") or "\0" in path or path.endswith("/"):
        raise ConfigError(
            f"{what} {addr!r} is not valid: expected 'unix:' and an absolute path "
            "to a socket file, e.g. 'unix:/run/aemp/node.sock'"
        )
    size = len(os.fsencode(path))
    if size > MAX_UNIX_PATH:
        raise ConfigError(
            f"{what} {addr!r} is not valid: its path is {size} bytes long, "
            f"a unix socket's path may have at most {MAX_UNIX_PATH}"
        )
    return path


def _split(addr: str) -> tuple[str | None, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = addr, "*"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if port in ("*", ""):
        port = "0"
    if not port.isdigit() or int(port) > 65535:
        return None
    return (None if host in ("*", "") else host), int(port)


def parse_bind(bind: str, what: str = "bind") -> tuple[str | None, int]:
    """ "host:port", "*:port", "[::1]:port"; port "*" or "0" is any free port.

    ``what`` names the value in the error: "'binds' entry" for configuration.
    A "unix:/path" bind is checked with parse_unix and gives (path, -1).
    """
    if is_unix(bind):
        return parse_unix(bind, what), -1
    parsed = _split(bind)
    if parsed is None:
        raise ConfigError(
            f"{what} {bind!r} is not valid: expected 'host:port', '*:port' or 'host:*'"
        )
    return parsed


def parse_address(addr: str, what: str = "address") -> tuple[str, int]:
    """ "host:port" or "[::1]:port" of a node to dial; ``what`` names it in the error.

    A "unix:/path" address is checked with parse_unix and gives (path, -1).
    """
    if is_unix(addr):
        return parse_unix(addr, what), -1
    parsed = _split(addr)
    if parsed is None or parsed[0] is None or parsed[1] == 0:
        raise ConfigError(
            f"{what} {addr!r} is not valid: expected 'host:port' (a port from 1 to 65535)"
        )
    return parsed[0], parsed[1]


def format_address(host: str, port: int) -> str:
    """ "host:port", with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_addresses(
    bound: list[tuple[str | None, socket.AddressFamily, str, int]],
    unix_paths: tuple[str, ...] = (),
) -> list[str]:
    """The addresses to publish for listening sockets, loopback ones last,
    and after them the unix sockets ("unix:/path") at `unix_paths`.

    Each entry is (the host the bind named, or None for every interface;
    the socket's family; the IP address and port it is bound to). A
    wildcard bind is reached through every address of the host.
    """
    found: list[tuple[bool, str]] = []
    for host, family, ip, port in bound:
        for shown in [ip] if host is not None else host_addresses(family):
            loopback = ipaddress.ip_address(shown.partition("%")[0]).is_loopback
            found.append((loopback, format_address(shown, port)))
    # a stable sort: the order of the binds holds within each kind
    return [a for _, a in sorted(found, key=lambda f: f[0])] + [UNIX + p for p in unix_paths]


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def dial_order(addrs: list[str]) -> list[str]:
    """The addresses of a node in the order to try them: its unix sockets
    that exist on this host first, then its TCP addresses; a unix address
    whose path is no socket here is on another host, and left out."""
    local = [a for a in addrs if is_unix(a) and _is_socket(a[len(UNIX) :])]
    return local + [a for a in addrs if not is_unix(a)]
