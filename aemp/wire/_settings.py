# What one side needs before the first byte: who it is, how it proves it,
# what it offers and accepts, and its limits. Everything is checked here,
# once, so that a bad configuration fails when the node is set up, with a
# message that says how to fix it, and never halfway through a handshake.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from ._auth import AUTH_METHODS, DEFAULT_AUTH
from ._decoding import brief
from ._framing import DEFAULT_FRAMINGS, DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PACKET, FRAMINGS
from ._greeting import MAX_HEARTBEAT, MIN_HEARTBEAT

if TYPE_CHECKING:
    import ssl

_LINE_BREAKERS = (";", "\r", "\n")


def _got(value: Any) -> str:
    return f"got {brief(value, 60)}, a {type(value).__name__}"


def _names(key: str, value: Any, known: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # "a,b" as in the Perl config and the greeting
        value = [item for item in value.split(",") if item]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key!r} must be a list of names from {list(known)} ({_got(value)})")
    if not value:
        raise ConfigError(f"{key!r} must not be empty (choose from {list(known)})")
    for name in value:
        if name not in known:
            raise ConfigError(
                f"{key!r}: {brief(name, 60)} is not supported (choose from {list(known)})"
            )
    return tuple(value)


def _text(key: str, value: Any, forbidden: Sequence[str]) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key!r} must be a non-empty str ({_got(value)})")
    for char in forbidden:
        if char in value:
            raise ConfigError(f"{key!r} must not contain {char!r} (got {brief(value, 60)})")


@dataclass(frozen=True)
class Settings:
    """One side's configuration for every connection it makes or accepts.

    ``secret`` is the shared secret (str is used as its UTF-8 bytes).
    ``tls_server`` / ``tls_client`` are ready ssl.SSLContexts (certificate,
    key, CA, verify_mode CERT_REQUIRED, no host name check), both or neither;
    which one a connection uses depends on the nonces, not on who dialled.
    ``heartbeat`` (seconds) is announced to the peer as ``hb``.
    ``network`` (the network id, None for none) is announced as ``network``;
    whoever reads the greeting compares it with its own (networks_differ).
    """

    nodeid: str
    provider: str
    secret: str | bytes | None = field(default=None, repr=False)
    tls_server: ssl.SSLContext | None = field(default=None, repr=False)
    tls_client: ssl.SSLContext | None = field(default=None, repr=False)
    auth_offer: Sequence[str] = DEFAULT_AUTH
    auth_accept: Sequence[str] = DEFAULT_AUTH
    framing_format: Sequence[str] = DEFAULT_FRAMINGS
    max_packet: int = DEFAULT_MAX_PACKET
    max_objects: int = DEFAULT_MAX_OBJECTS
    heartbeat: float | None = None
    network: str | None = None
    secret_bytes: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _text("nodeid", self.nodeid, (*_LINE_BREAKERS, "#"))
        _text("provider", self.provider, _LINE_BREAKERS)
        if self.network is not None:
            _text("network", self.network, (*_LINE_BREAKERS, ","))
        secret = self.secret
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ConfigError(f"'secret' must be a non-empty str or bytes ({_got(self.secret)})")
        object.__setattr__(self, "secret_bytes", secret)
        self._check_tls()
        set_ = object.__setattr__
        set_(self, "auth_offer", _names("auth_offer", self.auth_offer, AUTH_METHODS))
        set_(self, "auth_accept", _names("auth_accept", self.auth_accept, AUTH_METHODS))
        set_(self, "framing_format", _names("framing_format", self.framing_format, FRAMINGS))
        mp = self.max_packet
        if not isinstance(mp, int) or isinstance(mp, bool) or mp < 1:
            raise ConfigError(f"'max_packet' must be a positive int of bytes ({_got(mp)})")
        mo = self.max_objects
        if not isinstance(mo, int) or isinstance(mo, bool) or mo < 1:
            raise ConfigError(f"'max_objects' must be a positive int of values ({_got(mo)})")
        hb = self.heartbeat
        if hb is not None and not (
            isinstance(hb, (int, float))
            and not isinstance(hb, bool)
            and math.isfinite(hb)
            and MIN_HEARTBEAT <= hb <= MAX_HEARTBEAT
        ):
            raise ConfigError(
                f"'heartbeat' must be seconds from {MIN_HEARTBEAT:g} to {MAX_HEARTBEAT:g}, "
                f"or None ({_got(hb)})"
            )
        if secret is None and not self.tls:
            raise ConfigError(
                f"node {brief(self.nodeid, 60)} has neither a shared secret nor a certificate and "
                f"could not authenticate to anyone: set a shared secret (aemp gensecret) "
                f"or a certificate (aemp gencert)"
            )
        for key in ("auth_offer", "auth_accept"):
            if not any(self.can_use(method) for method in getattr(self, key)):
                raise ConfigError(
                    f"{key!r} {list(getattr(self, key))} has no method this node can use: "
                    f"tls_* methods need a certificate, hmac_sha3_512 and cleartext a secret"
                )

    def _check_tls(self) -> None:
        server, client = self.tls_server, self.tls_client
        if server is None and client is None:
            return
        import ssl  # only now: ssl imports socket, and this core must not need it

        for key, ctx in (("tls_server", server), ("tls_client", client)):
            if not isinstance(ctx, ssl.SSLContext):
                raise ConfigError(
                    f"{key!r} must be an ssl.SSLContext when the other one is set ({_got(ctx)})"
                )
            if ctx.verify_mode != ssl.CERT_REQUIRED:
                # tls_sha3_512 tokens prove nothing by themselves: all the
                # trust is in both sides verifying the other's certificate
                raise ConfigError(
                    f"{key!r} must verify the peer (verify_mode CERT_REQUIRED, "
                    f"got {ctx.verify_mode!r})"
                )
        assert client is not None
        if client.check_hostname:
            raise ConfigError(
                "'tls_client' must have check_hostname = False: aemp peers are "
                "identified by their certificate chain, not by a host name"
            )

    @property
    def tls(self) -> bool:
        """True if this side has TLS configured."""
        return self.tls_server is not None

    def can_use(self, method: str) -> bool:
        return self.tls if method.startswith("tls_") else self.secret_bytes is not None
