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

Verify flags do not follow the switch: SSL_set_SSL_CTX swaps the certificate and the CA
store (with its CRLs) but the connection keeps the verify flags and mode of the listener's
context. Flags therefore depend only on what is fixed at construction (a CRL file or not:
`CRL_VERIFY_FLAGS`, always the whole chain), and a rebuilt context whose flags or mode differ
is refused, never installed half-applied.

The same periodic check watches the CRLs' validity (`crl_validity`): one warning an hour
while the earliest next update is less than `CRL_EXPIRY_WARNING` away, and one error when a
CRL expires while the server runs (OpenSSL then refuses every client it covers).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiodicom.aio._tls_context import (
    CRL_EXPIRY_WARNING,
    CrlValidity,
    crl_validity,
    load_pem_crls,
    server_context,
)
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
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cert, self.key, self.ca = Path(cert), Path(key), Path(ca)
        self.crl = Path(crl) if crl is not None else None
        self.profile = profile
        self.check_interval = check_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self.crl_validity: CrlValidity | None = None
        """The validity window of the CRLs in use (None without a CRL file)."""
        self._crl_warned_at: float | None = None
        self._crl_expired_logged: datetime | None = None
        self._signature = self._stat()
        self._failed_signature: _Signature | None = None
        self._listener, self.crl_validity = self._build()
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

    def _build(self) -> tuple[ssl.SSLContext, CrlValidity | None]:
        ctx = server_context(
            cert=self.cert, key=self.key, ca=self.ca, crl=self.crl, profile=self.profile
        )
        validity = None
        if self.crl is not None:
            validity = crl_validity(load_pem_crls(self.crl.read_bytes()))
        return ctx, validity

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
        self.check_crl_expiry()
        signature = self._stat()
        if signature == self._signature or signature == self._failed_signature:
            return False
        return self._rebuild(signature)

    def reload_changed(self) -> bool:
        """Rebuild now if a file changed since the last load or failure (SIGHUP: no
        `check_interval` wait, and nothing rebuilt when nothing changed). Never raises."""
        self._checked_at = self._clock()
        signature = self._stat()
        if signature == self._signature or signature == self._failed_signature:
            return False
        return self._rebuild(signature)

    def reload(self) -> bool:
        """Rebuild now whether or not files changed (a trust mirror was updated). Never
        raises."""
        self._checked_at = self._clock()
        return self._rebuild(self._stat())

    def check_crl_expiry(self) -> None:
        """Log when the CRLs in use are about to expire (hourly) or have expired (once)."""
        validity = self.crl_validity
        if validity is None or validity.next_update is None:
            return
        left = validity.next_update - self._wall_clock()
        if left.total_seconds() <= 0:
            if self._crl_expired_logged != validity.next_update:
                self._crl_expired_logged = validity.next_update
                log.error(
                    "the CRL in %s expired at %s: every client certificate it covers is now "
                    "refused. Publish a new CRL (`aiodicom pki crl DIR`) and copy it to %s; "
                    "it is picked up within seconds", self.crl, validity.next_update, self.crl,
                )
            return
        if left < CRL_EXPIRY_WARNING:
            now = self._clock()
            if self._crl_warned_at is None or now - self._crl_warned_at >= 3600:
                self._crl_warned_at = now
                log.warning(
                    "the CRL in %s expires at %s (in %s): publish a new one before then "
                    "(`aiodicom pki crl DIR`) or every client certificate it covers is refused",
                    self.crl, validity.next_update, left,
                )

    def _rebuild(self, signature: _Signature) -> bool:
        try:
            ctx, validity = self._build()
            if (ctx.verify_flags, ctx.verify_mode) != (
                self._listener.verify_flags, self._listener.verify_mode
            ):
                raise ConfigurationError(
                    f"the rebuilt context's verify flags ({ctx.verify_flags!r}) differ from "
                    f"the listener's ({self._listener.verify_flags!r}) and cannot apply to "
                    "new connections: restart the server"
                )
        except (ConfigurationError, OSError, ValueError) as exc:
            self.last_error = str(exc)
            if signature != self._failed_signature:
                log.warning("TLS trust files not reloaded, keeping the previous ones: %s", exc)
            self._failed_signature = signature
            return False
        self._current = ctx
        self.crl_validity = validity
        self._crl_warned_at = None
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
