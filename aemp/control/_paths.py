# Where the control sockets of this host's nodes live, and who may use them.
#
# Each user has a private runtime directory: $XDG_RUNTIME_DIR/aemp when
# XDG_RUNTIME_DIR is set (systemd makes it per user, 0700, on tmpfs), else
# /tmp/aemp-<uid>. It must be a real directory (not a link) of this user
# with no access for group or others; anything else is refused, since a
# directory that someone else made could hold their socket under a node's
# name. In it, node N listens on <name>.sock and holds an flock on
# <name>.lock for as long as it lives: the lock, not the socket file, says
# whether the node is alive (the kernel drops it when the process dies,
# even by SIGKILL), so a stale socket is told from a live one without a
# race and a live one is never replaced. <name> is the node ID with every
# byte outside [A-Za-z0-9_.-] written %XX; when that would make the path
# longer than a unix socket address allows, a hash of the node ID.
#
# May import the leaves and aemp's public faces only (a capability).

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import stat
from pathlib import Path

from .. import AempError

# the longest path a unix socket address holds on Linux (108 bytes with its NUL)
MAX_SOCKET_PATH = 107
SUFFIX = ".sock"
LOCK_SUFFIX = ".lock"
_SAFE = re.compile(rb"[A-Za-z0-9_.-]")


class ControlError(AempError, OSError):
    """The control socket cannot be used: a runtime directory that is not
    private, a node that does not run here, a refused or broken connection,
    or an error the node answered (``code`` names it, as in docs/control.md)."""

    def __init__(self, message: str, code: str = "failed", data: dict[str, object] | None = None):
        super().__init__(message)
        self.code = code
        self.data = data or {}

    def __str__(self) -> str:
        return str(self.args[0])


def runtime_dir() -> Path:
    """This user's directory of control sockets (it may not exist yet)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "aemp"
    return Path(f"/tmp/aemp-{os.geteuid()}")


def check_dir(path: Path) -> None:
    """ControlError unless `path` is a directory of this user, closed to others."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ControlError(f"cannot use the runtime directory {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(
            f"the runtime directory {path} is not a directory: expected a directory of "
            f"this user with mode 0700 (remove it, or set XDG_RUNTIME_DIR)"
        )
    if st.st_uid != os.geteuid():
        raise ControlError(
            f"the runtime directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): refusing to use it (remove it, or set XDG_RUNTIME_DIR)"
        )
    if st.st_mode & 0o077:
        raise ControlError(
            f"the runtime directory {path} has mode {stat.S_IMODE(st.st_mode):04o}: "
            "expected 0700, closed to group and others (chmod 700 it)"
        )


def make_dir() -> Path:
    """The runtime directory, made (mode 0700) if missing, and checked."""
    path = runtime_dir()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ControlError(f"cannot make the runtime directory {path}: {e.strerror}") from None
    check_dir(path)
    return path


def socket_name(nodeid: str) -> str:
    """The file name (without directory) of node `nodeid`'s socket."""
    raw = nodeid.encode()
    name = "".join(chr(b) if _SAFE.match(bytes([b])) else f"%{b:02X}" for b in raw)
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + SUFFIX


def socket_path(nodeid: str, directory: Path | None = None) -> Path:
    """Where node `nodeid` listens: <dir>/<name>.sock, or a hashed name if too long."""
    directory = runtime_dir() if directory is None else directory
    path = directory / socket_name(nodeid)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        digest = hashlib.sha256(nodeid.encode()).hexdigest()[:32]
        path = directory / f"h-{digest}{SUFFIX}"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ControlError(
            f"the runtime directory {directory} is too long for a unix socket address "
            f"({MAX_SOCKET_PATH} bytes at most): set XDG_RUNTIME_DIR to a shorter one"
        )
    return path


def lock_path(sock: Path) -> Path:
    return sock.with_name(sock.name[: -len(SUFFIX)] + LOCK_SUFFIX)


def _try_lock(path: Path, create: bool) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if another holds it.

    FileNotFoundError when it does not exist and create is False. The lock
    is taken on the file that is at the path afterwards too: one that was
    removed meanwhile (by a cleanup that held it) is tried again.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    for _ in range(5):
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            raise FileNotFoundError(path)
    raise ControlError(f"cannot lock {path}: it keeps being replaced")


async def take_lock(sock: Path) -> int | None:
    """The node's lock for `sock` (an fd to keep open while it lives), or None
    when a live node holds it. A cleanup by `aemp ps` holds a lock for a
    moment only, so a busy lock is tried a few times before it counts."""
    path = lock_path(sock)
    for _ in range(5):
        try:
            fd = _try_lock(path, create=True)
        except OSError as e:
            if isinstance(e, ControlError):
                raise
            raise ControlError(f"cannot lock {path}: {e.strerror}") from None
        if fd is not None:
            return fd
        await asyncio.sleep(0.02)
    return None


def release_lock(sock: Path, fd: int) -> None:
    """Remove the node's socket and lock files, then drop the lock."""
    for path in (sock, lock_path(sock)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    os.close(fd)


def clean_stale(sock: Path) -> bool:
    """Remove `sock` and its lock if no live node holds the lock; True if removed.

    A live node is never touched: its lock is held. A missing lock file is
    made and taken first, so that a node starting meanwhile waits for it.
    """
    lock = lock_path(sock)
    try:
        fd = _try_lock(lock, create=True)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        for path in (sock, lock):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)
    return True


def socket_files(directory: Path | None = None) -> list[Path]:
    """The socket files in the runtime directory, sorted ([] if it does not exist)."""
    directory = runtime_dir() if directory is None else directory
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ControlError(f"cannot read the runtime directory {directory}: {e.strerror}") from None
    return sorted(directory / n for n in names if n.endswith(SUFFIX))
