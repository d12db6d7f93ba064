"""The aiodicom certificate authority (PS3.15 B.12): root, per-organization intermediates,
server and client certificates that carry AE titles, revocation, CRLs, client bundles.

`aiodicom pki` is `cli`; the library is `ca` (issuing), `revoke` (revocation, CRLs,
listing), `bundle` (client bundles, the development PKI) and `files` (keys, PEM, index).
"""

from __future__ import annotations

from aiodicom.app.pki.cli import (
    CA,
    DEV_CLIENT_AE_TITLES,
    CertKind,
    CertRecord,
    ClientBundle,
    DevPKI,
    IssuedCertificate,
    add_subparsers,
    ensure_dev_pki,
    export_bundle,
    init_ca,
    issue_client,
    issue_server,
    list_certs,
    main,
    revoke,
    write_crl,
)

__all__ = [
    "CA",
    "DEV_CLIENT_AE_TITLES",
    "CertKind",
    "CertRecord",
    "ClientBundle",
    "DevPKI",
    "IssuedCertificate",
    "add_subparsers",
    "ensure_dev_pki",
    "export_bundle",
    "init_ca",
    "issue_client",
    "issue_server",
    "list_certs",
    "main",
    "revoke",
    "write_crl",
]
