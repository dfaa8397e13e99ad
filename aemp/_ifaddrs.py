# This host's own addresses, for nodes that listen on every interface.
#
# A node bound to "*:port" must tell the others where to reach it, and
# 127.0.0.1 reaches it only from its own host. The addresses come from the
# kernel (Linux: the SIOCGIFCONF ioctl for IPv4, /proc/net/if_inet6 for
# IPv6), else from resolving the host name. Nothing is sent anywhere.

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys

SIOCGIFCONF = 0x8912
_IFNAMSIZ = 16
_SCOPE_LINK = 0x20  # if_inet6 scope of fe80::/10, useless without an interface name


def host_addresses(family: socket.AddressFamily) -> list[str]:
    """This host's addresses in `family`: reachable from elsewhere first,
    loopback last. Never empty: the loopback address at least."""
    found: list[str] = []
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            found = _linux_ipv4() if family == socket.AF_INET else _linux_ipv6()
    if not found:
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM)
            found = [str(info[4][0]) for info in infos]
    loopback = "127.0.0.1" if family == socket.AF_INET else "::1"
    out: list[str] = []
    for addr in found:
        ip = ipaddress.ip_address(addr.partition("%")[0])
        if not ip.is_loopback and not ip.is_link_local and addr not in out:
            out.append(addr)
    out.append(loopback)
    return out


def _linux_ipv4() -> list[str]:
    import array
    import fcntl

    entry = _IFNAMSIZ + (24 if struct.calcsize("P") == 8 else 16)  # sizeof(struct ifreq)
    buf = array.array("B", bytes(entry * 256))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("iP", len(buf), buf.buffer_info()[0])
        size = struct.unpack("iP", fcntl.ioctl(s.fileno(), SIOCGIFCONF, req))[0]
    data = buf.tobytes()[:size]
    out = []
    for i in range(0, size - entry + 1, entry):
        # struct sockaddr_in after the name: family (2), port (2), address (4)
        sin = data[i + _IFNAMSIZ : i + _IFNAMSIZ + 8]
        if struct.unpack("H", sin[:2])[0] == socket.AF_INET:
            out.append(socket.inet_ntoa(sin[4:8]))
    return out


def _linux_ipv6() -> list[str]:
    out = []
    with open("/proc/net/if_inet6") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and int(fields[3], 16) != _SCOPE_LINK:
                out.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out
