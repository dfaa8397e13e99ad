# Authentication: after the greetings each side sends one line
#     <method>;<token>;<framing>
# proving that it knows the shared secret (hmac_sha3_512, cleartext) or that
# it is the end of the TLS session it verified (tls_sha3_512, tls_anon).
#
# A token covers both greetings, the sender's own first, so a token is
# good for one connection and one direction only and cannot be replayed.
# Unlike Perl, a received method must also be in our own auth_accept list:
# a node configured without cleartext should never be talked into it.

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import AuthError, RemoteProtocolError

HMAC = "hmac_sha3_512"
CLEARTEXT = "cleartext"
TLS_SHA3 = "tls_sha3_512"
TLS_ANON = "tls_anon"
AUTH_METHODS = (TLS_SHA3, HMAC, TLS_ANON, CLEARTEXT)
DEFAULT_AUTH = (TLS_SHA3, HMAC)
_SECRET_METHODS = (HMAC, CLEARTEXT)

Lines = tuple[bytes, bytes]


@dataclass(frozen=True)
class AuthLine:
    """A parsed auth line. ``framing`` is what its sender will send."""

    method: str
    token: bytes
    framing: str


def _transcript(own: Lines, remote: Lines) -> bytes:
    return b"".join(line + b"\n" for line in (*own, *remote))


def auth_token(method: str, secret: bytes | None, own: Lines, remote: Lines) -> bytes:
    """The token the side with greeting lines ``own`` sends (lowercase hex).

    The token this side expects back is ``auth_token(method, secret, remote, own)``.
    """
    if method == TLS_ANON:
        return b""
    if method == TLS_SHA3:
        return hashlib.sha3_512(_transcript(own, remote)).hexdigest().encode()
    if secret is None:
        raise AuthError(f"auth method {method!r} needs a shared secret and none is configured")
    if method == HMAC:
        return hmac.new(secret, _transcript(own, remote), hashlib.sha3_512).hexdigest().encode()
    if method == CLEARTEXT:
        return secret.hex().encode()
    raise AuthError(f"unknown auth method {method!r} (known: {', '.join(AUTH_METHODS)})")


def choose_auth_method(
    remote_accept: Sequence[str], offer: Sequence[str], *, tls: bool, have_secret: bool
) -> str:
    """The method we send: the first the peer accepts that we offer and can do.

    With TLS it must be a tls_* method (its token ties the auth line to the
    verified TLS session); without TLS it must be one that uses the secret.
    """
    for method in remote_accept:
        if method not in offer:
            continue
        if method.startswith("tls_") == tls and (tls or have_secret):
            return method
    if not tls and not have_secret:
        raise AuthError(
            "the peer does not use TLS and no shared secret is configured: set a shared "
            "secret (aemp gensecret) on both nodes, or a certificate (aemp gencert) on both"
        )
    kind = "tls_* method (TLS is in use)" if tls else "method usable without TLS"
    raise AuthError(
        f"no common auth method: the peer accepts {list(remote_accept)}, we offer "
        f"{list(offer)}, and we need a {kind}"
    )


def parse_auth_line(line: bytes) -> AuthLine:
    parts = line.split(b";")
    if len(parts) != 3:
        raise RemoteProtocolError(
            f"auth line has {len(parts)} fields, expected 3 (method;token;framing): {line[:200]!r}"
        )
    try:
        method, framing = parts[0].decode("ascii"), parts[2].decode("ascii")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"auth line is not ASCII: {line[:200]!r}") from exc
    return AuthLine(method, parts[1], framing)


def verify_auth_line(
    auth: AuthLine,
    *,
    accept: Sequence[str],
    tls: bool,
    secret: bytes | None,
    own: Lines,
    remote: Lines,
) -> None:
    """Raise AuthError unless ``auth`` (from the peer) is acceptable and its token right."""
    method = auth.method
    if method not in AUTH_METHODS:
        raise AuthError(f"the peer used the unknown auth method {method!r}")
    if method not in accept:
        raise AuthError(
            f"the peer authenticated with {method!r}, which is not in our "
            f"auth_accept {list(accept)}"
        )
    if method.startswith("tls_") and not tls:
        raise AuthError(f"the peer authenticated with {method!r} but TLS is not in use")
    if method in _SECRET_METHODS and secret is None:
        raise AuthError(
            f"the peer authenticated with {method!r} but no shared secret is configured here"
        )
    expected = auth_token(method, secret, remote, own)
    if not hmac.compare_digest(auth.token, expected):
        raise AuthError(
            f"authentication failure/shared secret mismatch: the peer's {method} token does "
            f"not match"
        )
