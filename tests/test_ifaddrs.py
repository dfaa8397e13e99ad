"""This host's addresses, as a node bound to "*" publishes them. Nothing is sent."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from aemp import _ifaddrs
from aemp._ifaddrs import host_addresses


def bindable(addr: str, family: socket.AddressFamily) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_host_addresses_are_this_hosts_with_loopback_last(family: socket.AddressFamily) -> None:
    addrs = host_addresses(family)
    assert addrs[-1] == ("127.0.0.1" if family == socket.AF_INET else "::1")
    assert len(set(addrs)) == len(addrs)
    for a in addrs[:-1]:
        ip = ipaddress.ip_address(a)
        assert not ip.is_loopback and not ip.is_link_local
        assert ip.version == (4 if family == socket.AF_INET else 6)
        if family == socket.AF_INET or socket.has_ipv6:
            assert bindable(a, family), a


def test_without_the_kernel_tables_the_host_name_is_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ifaddrs.sys, "platform", "other")
    monkeypatch.setattr(
        _ifaddrs.socket,
        "getaddrinfo",
        lambda *a: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))
            for ip in ("198.51.100.7", "127.0.1.1", "169.254.1.1", "198.51.100.7")
        ],
    )
    assert host_addresses(socket.AF_INET) == ["198.51.100.7", "127.0.0.1"]


def test_a_failing_lookup_leaves_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object) -> None:
        raise OSError("no resolver")

    monkeypatch.setattr(_ifaddrs.sys, "platform", "other")
    monkeypatch.setattr(_ifaddrs.socket, "getaddrinfo", fail)
    assert host_addresses(socket.AF_INET6) == ["::1"]
