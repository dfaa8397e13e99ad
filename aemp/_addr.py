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

from __future__ import annotations

import ipaddress
import socket

from ._errors import ConfigError
from ._ifaddrs import host_addresses

__all__ = ["format_address", "host_addresses", "listen_addresses", "parse_address", "parse_bind"]


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
    """
    parsed = _split(bind)
    if parsed is None:
        raise ConfigError(
            f"{what} {bind!r} is not valid: expected 'host:port', '*:port' or 'host:*'"
        )
    return parsed


def parse_address(addr: str, what: str = "address") -> tuple[str, int]:
    """ "host:port" or "[::1]:port" of a node to dial; ``what`` names it in the error."""
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
) -> list[str]:
    """The addresses to publish for listening sockets, loopback ones last.

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
    return [a for _, a in sorted(found, key=lambda f: f[0])]
