"""Network namespaces joined by a bridge, for the tests that send multicast.

A namespace of its own holds a bridge; each node's namespace n<i> is
joined to it by a veth pair (eth0 inside, 10.77.0.<i>/24) and routes
224.0.0.0/4 to eth0. None of them has a route or a link to the host's own
network, so multicast never leaves them. `made()` makes them and deletes
them afterwards, also when a test fails; without root (or without `ip
netns`) it skips the tests, and says why in the summary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Lan:
    """Namespaces <prefix>-lan (the bridge) and <prefix>-n1 .. -n<count>."""

    def __init__(self, tag: str, count: int) -> None:
        self.prefix = f"aempt{os.getpid() % 100000}{tag}"
        self.bridge = f"{self.prefix}-lan"
        self.count = count

    def ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def teardown(self) -> None:
        for name in [self.bridge, *(self.ns(i) for i in range(1, self.count + 1))]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def setup(self) -> None:
        br = self.bridge
        ip("netns", "add", br)
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", br, "link", "set", "br0", "up")
        for i in range(1, self.count + 1):
            ns = self.ns(i)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}",
               "netns", br)  # fmt: skip
            ip("-n", br, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")


@contextmanager
def made(lan: Lan, what: str) -> Iterator[Lan]:
    """The namespaces of `lan` while the block runs; `what` names the skipped tests."""
    if os.geteuid() != 0:
        pytest.skip(f"network namespaces need root: {what} did not run")
    if shutil.which("ip") is None:
        pytest.skip(f"no 'ip' command (iproute2): {what} did not run")
    try:
        lan.setup()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        lan.teardown()
        stderr = getattr(e, "stderr", "") or ""
        pytest.skip(f"cannot make network namespaces ({stderr.strip() or e}): {what} did not run")
    try:
        yield lan
    finally:
        lan.teardown()
