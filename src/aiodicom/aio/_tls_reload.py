"""Trust files reloaded while the server runs, without dropping a connection.

Theory of operation: the listener is given one SSLContext for its whole life (`context`).
Its ``sni_callback`` runs at the start of every handshake (OpenSSL's servername callback is
called for every ClientHello, with or without SNI) and moves the new connection onto the
newest context (``ssl_object.context = current``: OpenSSL's SSL_set_SSL_CTX), whose server
certificate, CA store and CRL then verify the client. Connections already established keep
the context they were made with. The same callback first checks, at most every
`check_interval` seconds, whether any file changed (mtime, size, inode); `reload()` forces a
rebuild (SIGHUP). A rebuild that fails (a file half-written, a key that does not match its
certificate yet) keeps the previous context and logs one warning per distinct file state.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiodicom.aio._tls_context import server_context
from aiodicom.errors import ConfigurationError

log = logging.getLogger("aiodicom.tls")

_Signature = tuple[tuple[int, int, int] | None, ...]


class ReloadingServerContext:
    """A server SSLContext whose trust material follows the files on disk.

    Give `context` to the listener (``asyncio.start_server(ssl=...)``, uvloop too). Build
    errors at construction raise ConfigurationError; later ones are logged and ignored.
    """

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        crl: Path | None = None,
        profile: str = "bcp195",
        check_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert, self.key, self.ca = Path(cert), Path(key), Path(ca)
        self.crl = Path(crl) if crl is not None else None
        self.profile = profile
        self.check_interval = check_interval
        self._clock = clock
        self._signature = self._stat()
        self._failed_signature: _Signature | None = None
        self._listener = self._build()
        self._listener.sni_callback = self._on_client_hello
        self._current = self._listener
        self._checked_at = clock()
        self.generation = 0
        """How many times a new context was installed since construction."""
        self.last_error: str | None = None
        """Why the last reload failed (None after a success)."""

    @property
    def context(self) -> ssl.SSLContext:
        """The listener's context (constant); new handshakes switch to `current`."""
        return self._listener

    @property
    def current(self) -> ssl.SSLContext:
        """The newest successfully built context."""
        return self._current

    def _build(self) -> ssl.SSLContext:
        return server_context(
            cert=self.cert, key=self.key, ca=self.ca, crl=self.crl, profile=self.profile
        )

    def _stat(self) -> _Signature:
        result: list[tuple[int, int, int] | None] = []
        for path in (self.cert, self.key, self.ca, self.crl):
            if path is None:
                result.append(None)
                continue
            try:
                st = os.stat(path)
            except OSError:
                result.append((-1, -1, -1))
            else:
                result.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(result)

    def maybe_reload(self) -> bool:
        """Rebuild if a file changed and `check_interval` has passed; True if a new context
        was installed. Never raises."""
        now = self._clock()
        if now - self._checked_at < self.check_interval:
            return False
        self._checked_at = now
        signature = self._stat()
        if signature == self._signature or signature == self._failed_signature:
            return False
        return self._rebuild(signature)

    def reload(self) -> bool:
        """Rebuild now (e.g. on SIGHUP) whether or not files changed. Never raises."""
        self._checked_at = self._clock()
        return self._rebuild(self._stat())

    def _rebuild(self, signature: _Signature) -> bool:
        try:
            ctx = self._build()
        except (ConfigurationError, OSError, ValueError) as exc:
            self.last_error = str(exc)
            if signature != self._failed_signature:
                log.warning("TLS trust files not reloaded, keeping the previous ones: %s", exc)
            self._failed_signature = signature
            return False
        self._current = ctx
        self._signature = signature
        self._failed_signature = None
        self.last_error = None
        self.generation += 1
        log.info(
            "TLS trust files reloaded (generation %d): cert %s, ca %s, crl %s",
            self.generation, self.cert, self.ca, self.crl,
        )
        return True

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
        listener: ssl.SSLContext,
    ) -> int | None:
        try:
            self.maybe_reload()
            if self._current is not listener:
                ssl_object.context = self._current
        except Exception:  # an exception here would abort the handshake with a traceback
            log.exception("TLS context switch failed; using the listener's context")
        return None
