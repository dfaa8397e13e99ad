# TLS over memory buffers. ssl.SSLObject reads from and writes to two
# MemoryBIOs instead of a socket, so the protocol core stays sans-IO, and
# whatever arrived right after the peer's greeting (the start of its TLS
# handshake) is written into the incoming buffer and not lost.
#
# Importing ssl also imports socket, so the connection imports this module
# only when a connection actually switches to TLS.

from __future__ import annotations

import ssl

from .._errors import AuthError, RemoteProtocolError

_READ_SIZE = 256 * 1024


class TlsLayer:
    """One TLS session: raw bytes in and out, plaintext in and out."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self.server_side = server_side
        self.handshake_done = False
        self.peer_closed = False  # close_notify or end of stream seen

    def receive(self, data: bytes) -> None:
        """Raw bytes from the network; b"" is the end of the stream."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete."""
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            if self._incoming.eof:
                raise RemoteProtocolError(
                    "the peer closed the connection during the TLS handshake"
                ) from None
            return False
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise RemoteProtocolError(
                f"the peer closed the connection during the TLS handshake ({exc})"
            ) from exc
        except ssl.SSLError as exc:
            raise AuthError(f"TLS handshake failed: {exc}") from exc
        self.handshake_done = True
        return True

    def read(self, *, authenticated: bool) -> bytes:
        """All plaintext available now. Errors before authentication are AuthErrors."""
        chunks = []
        read = self._obj.read
        while not self.peer_closed:
            try:
                chunk = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.peer_closed = True
                break
            except ssl.SSLError as exc:
                error = RemoteProtocolError if authenticated else AuthError
                raise error(f"TLS error: {exc}") from exc
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise RemoteProtocolError(f"TLS error while sending: {exc}") from exc

    def take_output(self) -> bytes:
        return self._outgoing.read()

    def has_output(self) -> bool:
        return self._outgoing.pending > 0

    def close(self) -> None:
        """Queue a close_notify; we do not wait for the peer's."""
        try:
            self._obj.unwrap()
        except ssl.SSLError:
            pass

    @property
    def version(self) -> str | None:
        return self._obj.version()
