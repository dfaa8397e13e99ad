# The backend-independent half of name leases: the records (Name, Lease),
# the errors, the Holding that keeps a lease alive in the background, the
# NameManager base class and the registry of backends by URL protocol.
#
# A backend implements five coroutines (_grant, _renew, _release, _list,
# _reset); everything users call is here, once, so the three backends agree
# on argument checks, on what a fresh name is and on how a held name is kept
# alive. The holder's side of a lease is a deadline on the loop's clock:
# `sent + ttl`, where `sent` is when the last successful grant or renewal
# was *sent*. Every backend starts its own clock for the lease when the
# request *arrives*, which is later, so the holder's deadline passes first:
# a holder learns that it lost a name before anybody else can be given it
# (as long as the two clocks run at the same rate, which is the usual
# assumption of leases; docs/names.md says so).
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._errors import AempError, InvalidArgument, OutOfRange

log = logging.getLogger("aemp.names")

#: the longest family or name, in characters: names are keys on the wire and
#: in etcd, and a bound keeps a hostile or buggy caller from making huge ones
MAX_NAME = 200
_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+")
#: errors queued for a holder that does not read them: the oldest are dropped
MAX_QUEUED_ERRORS = 100


class NameInUse(AempError, RuntimeError):
    """try_acquire or try_hold asked for a name somebody holds."""


class NameNotExist(AempError, LookupError):
    """try_acquire or try_hold asked for a name never acquired before."""


class NameLost(AempError, RuntimeError):
    """A lease is gone: it lapsed, was released, or went to another holder.

    Raised by keep_alive and delivered to a Holding's errors.
    """


class BackendUnavailable(AempError, ConnectionError):
    """The backend cannot be reached now (etcd down, no global node); the cause
    is in ``__cause__`` when there is one."""


class UnknownBackend(AempError, ValueError):
    """A URL names a protocol no backend is registered for, or is malformed."""


class InvalidName(AempError, ValueError):
    """A family or name is empty, too long or holds a character outside
    ``A-Z a-z 0-9 _ . : -``."""


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str (got {value!r:.60}, a {type(value).__name__})")
    if not value or len(value) > MAX_NAME or not _NAME_RE.fullmatch(value):
        raise InvalidName(
            f"{what} must be 1 to {MAX_NAME} characters of A-Z a-z 0-9 _ . : - (got {value!r:.60})"
        )
    return value


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidArgument(f"ttl must be a number of seconds (got {ttl!r:.40})")
    if not 0.1 <= ttl <= 3600:
        raise OutOfRange(f"ttl must be from 0.1 to 3600 seconds (got {ttl!r})")
    return float(ttl)


def smallest_free(used: set[str]) -> str:
    """The smallest non-negative integer, as a str, that is not in `used`."""
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


@dataclass(frozen=True, slots=True)
class Name:
    """A name as a backend knows it (the Go package's Name record)."""

    family: str
    name: str
    created_at: float  # seconds since the epoch: first acquired
    updated_at: float  # seconds since the epoch: last acquired
    free: bool
    token: int  # the fencing token of the last grant


@dataclass(frozen=True, slots=True)
class Lease:
    """What a grant gives the holder: the name and its fencing token.

    The token grows with every grant of the name, so a resource that
    remembers the highest token it saw can refuse a holder whose lease
    was given to somebody else since.
    """

    family: str
    name: str
    token: int


class Holding:
    """A name kept alive in the background until released (``hold``, ``try_hold``).

    ``name``, ``family``, ``token``; ``errors()`` yields every keep-alive
    error (``BackendUnavailable`` while it retries, then ``NameLost`` once,
    the last); ``on_error`` (if given) is called with each too; ``lost`` is
    true once the name is lost; ``release()`` (or leaving ``async with``)
    stops the keep-alive and releases the name.
    """

    def __init__(
        self,
        manager: NameManager,
        lease: Lease,
        deadline: float,
        on_error: Callable[[Exception], Any] | None,
    ) -> None:
        self.manager = manager
        self.lease = lease
        self.deadline = deadline
        self._on_error = on_error
        self._errors: asyncio.Queue[Exception | None] = asyncio.Queue()
        self.lost = False
        self._released = False
        self._done = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._keep())

    @property
    def name(self) -> str:
        return self.lease.name

    @property
    def family(self) -> str:
        return self.lease.family

    @property
    def token(self) -> int:
        return self.lease.token

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._done.is_set() else "held"
        return f"<Holding {self.family}/{self.name} token={self.token} {state}>"

    def _report(self, exc: Exception) -> None:
        if self._errors.qsize() >= MAX_QUEUED_ERRORS:
            self._errors.get_nowait()
        self._errors.put_nowait(exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("names: on_error callback of %s/%s failed", self.family, self.name)

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        m = self.manager
        try:
            while True:
                left = self.deadline - loop.time()
                if left <= 0:
                    m._forget(self.lease)
                    raise NameLost(f"{self.family}/{self.name}: lease lapsed (no renewal in time)")
                await asyncio.sleep(min(m.ttl / 3, left))
                left = self.deadline - loop.time()
                if left <= 0:
                    continue
                sent = loop.time()
                try:
                    async with asyncio.timeout(left):
                        ttl = await m._renew(self.lease)
                except TimeoutError:
                    continue  # the loop top says it lapsed
                except NameLost:
                    raise
                except Exception as e:  # a renewal that failed: retried until the deadline
                    if not isinstance(e, BackendUnavailable):
                        log.warning("names: renewing %s/%s: %r", self.family, self.name, e)
                        e = BackendUnavailable(f"renewal failed: {e!r:.200}")
                    self._report(e)
                    await asyncio.sleep(min(0.05 * m.ttl, max(0.0, self.deadline - loop.time())))
                    continue
                self.deadline = sent + ttl
                if (self.family, self.name) in m._held:
                    m._held[(self.family, self.name)] = (self.lease, self.deadline)
        except NameLost as e:
            m._forget(self.lease)
            self.lost = True
            self._report(e)
        finally:
            self._done.set()
            self._errors.put_nowait(None)

    def _taken(self, why: str) -> None:
        """The name was released or reset through the manager: lost to us."""
        if not self._done.is_set():
            self._task.cancel()
            self.lost = True
            self._report(NameLost(f"{self.family}/{self.name}: {why}"))

    async def errors(self) -> AsyncIterator[Exception]:
        """Yield keep-alive errors until the holding ends (released or lost)."""
        while True:
            exc = await self._errors.get()
            if exc is None:
                self._errors.put_nowait(None)  # for the next reader
                return
            yield exc

    async def wait_lost(self) -> NameLost | None:
        """Wait until the holding ends; the NameLost if it was lost, else None."""
        await self._done.wait()
        return NameLost(f"{self.family}/{self.name} lost") if self.lost else None

    async def release(self) -> None:
        """Stop keeping the name alive and release it (again: nothing)."""
        if self._released:
            return
        self._released = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.lost:
            await self.manager._release_lease(self.lease)

    async def __aenter__(self) -> Holding:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class NameManager(abc.ABC):
    """Unique names in families, granted as leases that lapse unless renewed.

    Made by ``open(url)``; every method is a coroutine. Subclasses are the
    backends: they implement ``_grant``, ``_renew``, ``_release``, ``_list``
    and ``_reset``.
    """

    url: str = ""

    def __init__(self, ttl: float) -> None:
        self.ttl = check_ttl(ttl)
        # what this manager holds: (family, name) -> (lease, holder deadline)
        self._held: dict[tuple[str, str], tuple[Lease, float]] = {}
        self._holdings: set[Holding] = set()
        self._closed = False

    # -------------------------------------------------------- the backend's part

    @abc.abstractmethod
    async def _grant(self, family: str, name: str | None, must_exist: bool) -> tuple[Lease, float]:
        """Grant `name` (None: the smallest free one); (lease, ttl in seconds)."""

    @abc.abstractmethod
    async def _renew(self, lease: Lease) -> float:
        """Renew; the ttl from now. NameLost if it is gone."""

    @abc.abstractmethod
    async def _release(self, family: str, name: str, lease: Lease | None) -> None:
        """Free `name` (with `lease`: only while that grant holds it)."""

    @abc.abstractmethod
    async def _list(self, family: str | None) -> list[Name]:
        """The names of `family` (None: every family), free ones included."""

    @abc.abstractmethod
    async def _reset(self) -> None:
        """Forget every name of every family."""

    async def _close(self) -> None:
        return None

    # -------------------------------------------------------- what users call

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"name manager {self.url!r} is closed")

    async def _timed_grant(self, family: str, name: str | None, must_exist: bool) -> Lease:
        self._check_open()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        lease, ttl = await self._grant(family, name, must_exist)
        self._held[(lease.family, lease.name)] = (lease, sent + ttl)
        return lease

    def _forget(self, lease: Lease) -> None:
        held = self._held.get((lease.family, lease.name))
        if held is not None and held[0] == lease:
            del self._held[(lease.family, lease.name)]

    async def acquire(self, family: str) -> Lease:
        """A fresh name of the family: the smallest non-negative integer not in
        use, as a str. The caller keeps it alive with keep_alive()."""
        return await self._timed_grant(check_name("family", family), None, False)

    async def try_acquire(self, family: str, name: str) -> Lease:
        """Acquire this name: NameInUse if held, NameNotExist if never acquired."""
        check_name("family", family)
        check_name("name", name)
        return await self._timed_grant(family, name, True)

    async def keep_alive(self, family: str, name: str) -> None:
        """Renew a name this manager holds; NameLost if it holds it no more."""
        check_name("family", family)
        check_name("name", name)
        self._check_open()
        held = self._held.get((family, name))
        if held is None:
            raise NameLost(f"{family}/{name} is not held by this manager")
        lease, deadline = held
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._forget(lease)
            raise NameLost(f"{family}/{name}: lease lapsed (no renewal in time)")
        sent = loop.time()
        try:
            ttl = await self._renew(lease)
        except NameLost:
            self._forget(lease)
            raise
        if (family, name) in self._held:
            self._held[(family, name)] = (lease, sent + ttl)

    async def _release_lease(self, lease: Lease) -> None:
        self._forget(lease)
        if not self._closed:
            await self._release(lease.family, lease.name, lease)

    async def release(self, family: str, name: str) -> None:
        """Release a name, whoever holds it; a free or unknown name is no error."""
        check_name("family", family)
        check_name("name", name)
        self._check_open()
        held = self._held.pop((family, name), None)
        for h in list(self._holdings):
            if (h.family, h.name) == (family, name):
                h._taken("released with release()")
        await self._release(family, name, held[0] if held else None)

    def _start(self, lease: Lease, on_error: Callable[[Exception], Any] | None) -> Holding:
        deadline = self._held[(lease.family, lease.name)][1]
        h = Holding(self, lease, deadline, on_error)
        self._holdings.add(h)
        h._task.add_done_callback(lambda _t: self._holdings.discard(h))
        return h

    async def hold(
        self, family: str, *, on_error: Callable[[Exception], Any] | None = None
    ) -> Holding:
        """acquire() a fresh name and keep it alive in the background."""
        return self._start(await self.acquire(family), on_error)

    async def try_hold(
        self, family: str, name: str, *, on_error: Callable[[Exception], Any] | None = None
    ) -> Holding:
        """try_acquire() this name and keep it alive in the background."""
        return self._start(await self.try_acquire(family, name), on_error)

    async def list(self, family: str | None = None) -> list[Name]:
        """Every name known (free or held), or those of one family, sorted."""
        if family is not None:
            check_name("family", family)
        self._check_open()
        names = await self._list(family)
        return sorted(names, key=lambda n: (n.family, _order(n.name)))

    async def reset(self) -> None:
        """Forget every name of every family: list() is empty afterwards."""
        self._check_open()
        for h in list(self._holdings):
            h._taken("every name reset with reset()")
        self._held.clear()
        await self._reset()

    async def aclose(self) -> None:
        """Stop every holding (without releasing: the leases lapse) and close."""
        if self._closed:
            return
        self._closed = True
        tasks = [h._task for h in self._holdings]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close()

    async def __aenter__(self) -> NameManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


# ---------------------------------------------------------------- backends by URL


@dataclass(frozen=True, slots=True)
class Backend:
    """A backend: its URL protocol, a description (with the URL's format), and
    ``create(rest, **options)``, an awaitable NameManager for the URL's part
    after ``protocol://``."""

    protocol: str
    description: str
    create: Callable[..., Awaitable[NameManager]]


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``open()`` use `backend` for URLs ``protocol://...`` (a later
    registration of the same protocol replaces it)."""
    if not isinstance(backend, Backend):
        raise InvalidArgument(f"register_backend wants a Backend (got {backend!r:.60})")
    if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", backend.protocol):
        raise UnknownBackend(
            f"a backend protocol is a lower-case URL scheme (got {backend.protocol!r:.60})"
        )
    _BACKENDS[backend.protocol] = backend


def backends() -> list[Backend]:
    """The registered backends, by protocol."""
    return [_BACKENDS[p] for p in sorted(_BACKENDS)]


async def open(url: str, **options: Any) -> NameManager:
    """A NameManager for `url` (``memory://``, ``aemp://``, ``etcd://host:port``).

    Options go to the backend: ``ttl`` (seconds, every backend), ``node``
    (``aemp://``). UnknownBackend for a URL no backend is registered for.
    """
    if not isinstance(url, str):
        raise InvalidArgument(f"url must be a str (got {url!r:.60})")
    protocol, sep, rest = url.partition("://")
    if not sep:
        raise UnknownBackend(f"a names URL looks like PROTOCOL://... (got {url!r:.80})")
    backend = _BACKENDS.get(protocol)
    if backend is None:
        known = ", ".join(f"{p}://" for p in sorted(_BACKENDS))
        raise UnknownBackend(f"no names backend for {protocol!r}:// (known: {known})")
    manager = await backend.create(rest, **options)
    manager.url = url
    return manager
