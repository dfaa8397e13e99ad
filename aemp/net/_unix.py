# Unix-domain listening sockets: making one safely at a path where a
# socket file may already be.
#
# The file is created with mode 0600 (the umask is narrowed around bind(),
# so that there is no moment when others could connect), in a directory
# that is made (0700) if missing. A socket file left by a node that died
# is replaced: nothing accepts on it, so a connect is refused. One that
# accepts belongs to a live node and is never taken over; nor is a path
# that holds anything but a socket. On close the file is removed, but only
# if it is still the one this node made (same device and inode): a node
# that replaced it since keeps its own.
#
# Plain blocking socket calls on a local path: they finish at once.

from __future__ import annotations

import errno
import os
import socket
import stat

from .._errors import ConfigError

__all__ = ["UnixListener"]


def _probe(path: str) -> bool:
    """True if something accepts connections on the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        if e.errno == errno.EAGAIN:  # its backlog is full: it lives
            return True
        raise
    finally:
        probe.close()
    return True


class UnixListener:
    """A listening unix socket at `path` (see the module comment)."""

    def __init__(self, path: str, backlog: int) -> None:
        bind = f"unix:{path}"
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise ConfigError(
                        f"cannot listen on {bind!r}: the path exists and is not a socket; "
                        "remove it or choose another path"
                    )
                if _probe(path):
                    raise ConfigError(
                        f"cannot listen on {bind!r}: a live process accepts connections "
                        "on it (another node?); stop it or choose another path"
                    )
                os.unlink(path)  # left by a node that died
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                old = os.umask(0o177)
                try:
                    sock.bind(path)
                finally:
                    os.umask(old)
                sock.listen(backlog)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise ConfigError(f"cannot listen on {bind!r}: {e.strerror or e}") from e
        self.path = path
        self.sock = sock
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        """Remove the socket file if it is still the one made here."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            try:
                os.unlink(self.path)
            except OSError:  # pragma: no cover - removed meanwhile
                pass
