"""Trust shared by every node: ``--ca``, ``--crl``, ``--policy``, ``--users`` from an object store.

Each of these options takes an object URL (``az://container/trust/crl.pem``,
``s3://bucket/trust/crl.pem``; `aiodicom.app.objstore`) as well as a path. A URL is mirrored
into a private local file (a directory of this process, mode 0700, removed at exit), and
the server is built on the mirror exactly as on a path: the TLS reloader
(`aiodicom.aio.ReloadingServerContext`, which cannot import app and only ever sees files;
OpenSSL loads CRLs only from a file anyway) and the policy/users reloaders
(`app/server/reloading.py`) stay as they are.

`TrustMirrors.run` polls every URL with a conditional GET (``If-None-Match: ETAG``: an
unchanged object costs a 304 and no body) every ``interval`` seconds and on `wake`
(SIGHUP). A new version is checked before it replaces the mirror, then the reloaders are
asked to reload at once; a revocation published once is enforced by every node within
``interval`` plus a fetch. Safety rules, as for files on disk:

- a fetch that fails keeps the last good trust (the mirror is not touched), logged once
  per distinct error and counted (`TrustStats`, exported as metrics);
- an object that does not parse (a CA file without a certificate, a CRL file without a
  CRL, a policy or users file the server would refuse) keeps the last good one, logged;
- a CRL older than the one in use (a lower CRL number, or without numbers an earlier
  lastUpdate, for any issuer) is refused as a rollback: whoever can write to the store
  must not be able to un-revoke a certificate by replaying an old CRL;
- the TLS reloader still refuses a combination that does not build (a CA without its CRL)
  and keeps the previous context; a CRL that expires while the store is unreachable fails
  closed in OpenSSL as it does on disk.

At start every URL must be fetched and valid, or the server does not start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.errors import ConfigurationError

if TYPE_CHECKING:
    from aiodicom.app.server.config import ServeOptions

__all__ = [
    "TRUST_OPTIONS", "RemoteTrustFile", "TrustMirrors", "TrustStats", "attach_mirrors",
    "check_crl_update", "open_mirrors",
]

log = logging.getLogger("aiodicom.trust")

TRUST_OPTIONS = ("ca", "crl", "policy", "users")
"""The serve options that take an object URL as well as a path."""

DEFAULT_INTERVAL = 2.0


@dataclasses.dataclass(slots=True)
class TrustStats:
    """What happened to one URL's fetches; read by the metrics (`register_trust_metrics`)."""

    results: dict[str, int] = dataclasses.field(default_factory=dict)
    """Fetches by result: ``updated``, ``unchanged``, ``failed`` (store error), ``refused``
    (did not parse, or a CRL rollback)."""
    last_success: float = 0.0
    """Unix time of the last fetch that reached the store (new or unchanged object)."""

    def count(self, result: str) -> None:
        self.results[result] = self.results.get(result, 0) + 1


def _check_ca(data: bytes, previous: bytes | None, path: Path) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"not a PEM CA certificate file ({exc})") from exc


def _crl_order(crl: Any) -> tuple[int, float]:
    from cryptography import x509

    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = -1
    return int(number), crl.last_update_utc.timestamp()


def _check_crl(data: bytes, previous: bytes | None, path: Path) -> None:
    """Parse, then refuse a rollback: per issuer, the new CRL must not be older."""
    from aiodicom.aio.tls import load_pem_crls

    try:
        crls = load_pem_crls(data)
    except ValueError as exc:
        raise ConfigurationError(f"not a PEM CRL file ({exc})") from exc
    if not crls:
        raise ConfigurationError("holds no '-----BEGIN X509 CRL-----' block")
    if previous is None:
        return
    new = {c.issuer.rfc4514_string(): c for c in crls}
    for old in load_pem_crls(previous):
        issuer = old.issuer.rfc4514_string()
        if issuer not in new:
            continue  # a CA left the bundle: the TLS reloader checks CA and CRL agree
        if new[issuer].tbs_certlist_bytes == old.tbs_certlist_bytes:
            continue  # this CA's CRL unchanged beside another CA's new one
        (old_number, old_time), (number, when) = _crl_order(old), _crl_order(new[issuer])
        older = number < old_number if min(number, old_number) >= 0 else when < old_time
        same = number == old_number if min(number, old_number) >= 0 else when == old_time
        if older or same:  # same number or time, other contents: a replay, not an update
            raise ConfigurationError(
                f"the CRL of {issuer} is not newer than the one in use (CRL number "
                f"{number} vs {old_number}, lastUpdate {time.ctime(when)} vs "
                f"{time.ctime(old_time)}): refused as a rollback; publish a new CRL "
                "(`aiodicom pki crl DIR` then `aiodicom pki publish DIR URL`)")


def check_crl_update(data: bytes, previous: bytes) -> None:
    """ConfigurationError if the CRLs ``data`` would roll back those of ``previous``."""
    _check_crl(data, previous, Path())


def _check_policy(data: bytes, previous: bytes | None, path: Path) -> None:
    from aiodicom.app.server.policy import AccessPolicy

    AccessPolicy.load(path)


def _check_users(data: bytes, previous: bytes | None, path: Path) -> None:
    from aiodicom.app.server.users import load_users

    load_users(path)


_CHECKS: dict[str, Callable[[bytes, bytes | None, Path], None]] = {
    "ca": _check_ca, "crl": _check_crl, "policy": _check_policy, "users": _check_users,
}


class RemoteTrustFile:
    """One object URL mirrored into ``path``, refreshed by conditional GET."""

    def __init__(self, option: str, url: str, directory: Path) -> None:
        from aiodicom.app.objstore import open_store, parse_store_url

        try:
            parsed = parse_store_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"--{option}: {exc}") from exc
        if not parsed.prefix:
            raise ConfigurationError(
                f"--{option} {url}: name the object, e.g. {url.rstrip('/')}/{option}.pem")
        self.option, self.url = option, url
        store, self.key = open_store(url)
        self.store: Any = store
        self.path = directory / f"{option}{Path(parsed.prefix).suffix or '.pem'}"
        self.etag: str | None = None
        self.stats = TrustStats()
        self._check = _CHECKS[option]
        self._data: bytes | None = None
        self._logged: str | None = None

    async def fetch(self) -> bool:
        """Fetch if changed; True when a new, valid version replaced the mirror. At start
        (no mirror yet) an error raises ConfigurationError; later it is logged and counted."""
        import obstore
        from obstore.exceptions import NotModifiedError

        restored = self._restore()
        if restored is None:
            return False
        options: Any = {"if_none_match": self.etag} if self.etag else None
        try:
            result = await obstore.get_async(self.store, self.key, options=options)
            data = bytes(await result.bytes_async())
            etag = result.meta.get("e_tag")
        except NotModifiedError:
            self._ok("unchanged")
            return restored
        except Exception as exc:  # obstore's errors, timeouts: the last good trust stays
            return self._failed("failed", f"cannot fetch {self.url}: {exc}") or restored
        if data == self._data:
            self.etag = etag
            self._ok("unchanged")
            return restored
        tmp = self.path.with_name(f".{self.path.name}.new")
        try:
            tmp.write_bytes(data)
            self._check(data, self._data, tmp)
        except (ConfigurationError, ValueError, UnicodeDecodeError) as exc:
            tmp.unlink(missing_ok=True)
            self.etag = etag  # not fetched again until it changes
            return self._failed("refused", f"{self.url} refused: {exc}")
        except OSError as exc:  # the local disk (full, read-only): fetched again next poll
            tmp.unlink(missing_ok=True)
            return self._failed("failed", f"cannot write the mirror of {self.url}: {exc}")
        try:
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return self._failed("failed", f"cannot write the mirror of {self.url}: {exc}")
        first = self._data is None
        self._data, self.etag = data, etag
        self._ok("updated")
        if not first:
            log.info("--%s: new version of %s (etag %s) fetched", self.option, self.url, etag)
        return True

    def _restore(self) -> bool | None:
        """Write the mirror back if it was removed under us (a /tmp cleaner removing what has
        not changed for days): True if written, None if that failed (counted, logged)."""
        if self._data is None or self.path.exists():
            return False
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.write_bytes(self._data)
        except OSError as exc:
            self._failed("failed", f"cannot write the mirror of {self.url} again: {exc}")
            return None
        log.warning("--%s: the mirror %s had been removed; written again", self.option,
                    self.path)
        return True

    def _ok(self, result: str) -> None:
        self.stats.count(result)
        self.stats.last_success = time.time()
        if self._logged is not None and result != "refused":
            self._logged = None

    def _failed(self, result: str, message: str) -> bool:
        self.stats.count(result)
        if self._data is None:
            raise ConfigurationError(f"--{self.option}: {message}")
        if message != self._logged:  # once per distinct error, not on every poll
            self._logged = message
            log.error("%s; the last good version stays in force", message)
        return False


class TrustMirrors:
    """The mirrored URLs of one server process, and the loop that keeps them fresh."""

    def __init__(self, files: list[RemoteTrustFile], directory: Path,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.files = files
        self.directory = directory
        self.interval = interval
        self.on_change: Callable[[], None] | None = None
        """Called after one or more mirrors changed (the reloaders' ``reload``)."""
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Fetch now (SIGHUP), not at the next interval."""
        if self._wake is not None:
            self._wake.set()

    async def poll(self) -> bool:
        """One conditional GET per URL; True (and `on_change` called) if anything changed."""
        changed = [await f.fetch() for f in self.files]
        if any(changed) and self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("reloading after a trust update failed")
        return any(changed)

    async def run(self) -> None:
        """Poll every ``interval`` seconds and on `wake`, until cancelled."""
        self._wake = asyncio.Event()
        while True:
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.poll()
            except Exception:  # never stop polling: the next revocation must still apply
                log.exception("polling the trust sources failed; trying again in %.1f s",
                              self.interval)

    def close(self) -> None:
        """Remove the mirrors (the stores hold no connection worth closing explicitly)."""
        for f in self.files:
            f.store = None
        shutil.rmtree(self.directory, ignore_errors=True)


def attach_mirrors(mirrors: TrustMirrors, reloading: Any, metrics: Any) -> None:
    """After a mirror changes, reload (the TLS context, policy, users) at once; with
    metrics, export the fetch counts (`register_trust_metrics`)."""
    if reloading is not None:
        mirrors.on_change = reloading.reload
    if metrics is not None:
        from aiodicom.app.server.metrics import register_trust_metrics

        tls = getattr(reloading, "tls", reloading)
        register_trust_metrics(metrics, mirrors, tls if hasattr(tls, "last_error") else None)


async def open_mirrors(options: ServeOptions) -> tuple[ServeOptions, TrustMirrors | None]:
    """Fetch every trust URL among ``options`` into local mirrors; return the options with
    the mirrors' paths in their place (None: no URL, nothing to poll). Raises
    ConfigurationError if a URL cannot be fetched or does not parse."""
    from aiodicom.app.objstore import is_store_url

    urls = {name: str(getattr(options, name)) for name in TRUST_OPTIONS
            if getattr(options, name) is not None and is_store_url(str(getattr(options, name)))}
    if not urls:
        return options, None
    directory = Path(tempfile.mkdtemp(prefix="aiodicom-trust-"))
    mirrors = TrustMirrors([], directory,
                           getattr(options, "trust_poll_interval", DEFAULT_INTERVAL))
    try:
        for name, url in urls.items():
            mirrors.files.append(RemoteTrustFile(name, url, directory))
        await mirrors.poll()
    except BaseException:
        mirrors.close()
        raise
    log.info("trust from the object store, polled every %.1f s: %s", mirrors.interval,
             ", ".join(f"--{f.option} {f.url}" for f in mirrors.files))
    replaced: dict[str, Any] = {f.option: f.path for f in mirrors.files}
    return dataclasses.replace(options, **replaced), mirrors
