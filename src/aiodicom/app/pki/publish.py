"""`aiodicom pki publish DIR URL`: the CA's trust anchor and CRL, to an object store.

Writes ``URL/ca.crt`` (DIR/ca.crt, the trust anchor servers take as ``--ca``) and
``URL/crl.pem`` (DIR/crl.pem: one CRL per CA of DIR) so that every node started with
``--ca URL/ca.crt --crl URL/crl.pem`` follows them (`app/server/trust_source.py`). Each
object is written by one PUT, which the store makes visible only when complete (atomic per
object); the CRL goes first, so a node never sees a CA bundle ahead of the CRL covering it
for more than one poll. Before anything is written, the CRL is checked against DIR: it must
parse and hold a CRL from every CA in DIR, signed by that CA, not past its next update.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiodicom.app.pki.revoke import CRL_NAME, ca_certificates
from aiodicom.errors import ConfigurationError

__all__ = ["Published", "check_publishable", "publish", "publish_async"]

CA_NAME = "ca.crt"


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """What `publish` wrote: the object URLs, in the order written."""

    urls: tuple[str, ...]
    revoked: int
    """Revoked serials in the published CRLs (all CAs)."""


def check_publishable(directory: Path, *, now: datetime | None = None) -> tuple[bytes, bytes, int]:
    """(CA bytes, CRL bytes, revoked count) of DIR, or ConfigurationError saying what to fix."""
    from cryptography import x509

    from aiodicom.aio.tls import load_pem_crls

    cas = ca_certificates(directory)  # ConfigurationError if DIR is not a CA
    crl_path = directory / CRL_NAME
    try:
        crl_bytes = crl_path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{crl_path} does not exist: write it first with `aiodicom pki crl {directory}`"
        ) from None
    try:
        crls = load_pem_crls(crl_bytes)
    except ValueError as exc:
        raise ConfigurationError(f"{crl_path} is not a PEM CRL file: {exc}") from exc
    by_issuer: dict[x509.Name, x509.CertificateRevocationList] = {c.issuer: c for c in crls}
    when = now or datetime.now(UTC)
    for org, path, cert in cas:
        crl = by_issuer.get(cert.subject)
        what = f"the {org} intermediate" if org else "the root"
        if crl is None or not crl.is_signature_valid(cert.public_key()):  # type: ignore[arg-type]
            raise ConfigurationError(
                f"{crl_path} has no CRL signed by {what} ({path}): run "
                f"`aiodicom pki crl {directory}` and publish again")
        if crl.next_update_utc is not None and crl.next_update_utc <= when:
            raise ConfigurationError(
                f"the CRL of {what} in {crl_path} expired at {crl.next_update_utc}: run "
                f"`aiodicom pki crl {directory}` and publish again")
    ca_bytes = (directory / CA_NAME).read_bytes()
    return ca_bytes, crl_bytes, sum(len(list(c)) for c in crls)


async def publish_async(directory: Path, url: str) -> Published:
    """Check DIR, then PUT ``URL/crl.pem`` and ``URL/ca.crt``."""
    from aiodicom.app.objstore import open_store, parse_store_url

    try:
        parsed = parse_store_url(url)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    ca_bytes, crl_bytes, revoked = check_publishable(directory)
    import obstore

    store, _ = open_store(url)
    await _refuse_rollback(store, parsed.key(CRL_NAME), crl_bytes,
                           f"{parsed.scheme}://{parsed.bucket}/{parsed.key(CRL_NAME)}")
    written: list[str] = []
    for name, data in ((CRL_NAME, crl_bytes), (CA_NAME, ca_bytes)):
        key = parsed.key(name)
        try:
            await obstore.put_async(store, key, data)
        except Exception as exc:  # obstore's errors name the store's answer
            done = f" ({', '.join(written)} written)" if written else " (nothing written)"
            raise ConfigurationError(f"cannot write {parsed.scheme}://{parsed.bucket}/{key}: "
                                     f"{exc}{done}") from exc
        written.append(f"{parsed.scheme}://{parsed.bucket}/{key}")
    del store
    return Published(urls=tuple(written), revoked=revoked)


async def _refuse_rollback(store: Any, key: str, crl_bytes: bytes, where: str) -> None:
    """ConfigurationError if the store holds a newer CRL than ``crl_bytes`` (DIR is an older
    copy of the CA: nodes started later would take its CRL and un-revoke certificates)."""
    import obstore
    from obstore.exceptions import NotFoundError

    from aiodicom.app.server.trust_source import check_crl_update

    try:
        current = bytes(await (await obstore.get_async(store, key)).bytes_async())
    except (FileNotFoundError, NotFoundError):
        return
    except Exception as exc:  # obstore's errors name the store's answer
        raise ConfigurationError(f"cannot read {where} to compare: {exc}; nothing written") \
            from exc
    if current != crl_bytes:
        try:
            check_crl_update(crl_bytes, current)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where} is newer than this directory's: {exc}; "
                                     "nothing written") from None


def publish(directory: Path, url: str) -> Published:
    """`publish_async` on a loop of its own (the CLI)."""
    return asyncio.run(publish_async(directory, url))
