"""DICOM over TLS (PS3.15 Annex B): context builders, peer identity, live reload.

- `server_context` / `client_context`: mutual-TLS contexts for the B.12 ("bcp195") and B.13
  ("bcp195-modified") profiles: TLS 1.2 minimum, 1.3 preferred, ECDHE + AEAD only, peer
  certificate required, CRL checking, weak keys refused.
- `PeerIdentity`, `identity_from_der`, `identity_from_ssl_object`: who the verified peer is
  (subject, organization, groups, the AE titles its certificate binds).
- `ae_title_allowed`: the calling-AE-title binding (docs/security.md).
- `ReloadingServerContext`: trust files reloaded while the server runs.
"""

from __future__ import annotations

from aiodicom.aio._tls_context import (
    PROFILES,
    TLS12_CIPHERS_B12,
    TLS12_CIPHERS_B13,
    TLS13_SUITES_B13,
    check_key_strength,
    client_context,
    load_pem_crls,
    profile_gaps,
    server_context,
)
from aiodicom.aio._tls_identity import (
    AE_URI_SCHEME,
    PeerIdentity,
    ae_title_allowed,
    ae_title_to_uri,
    ae_titles_from_certificate,
    identity_from_certificate,
    identity_from_der,
    identity_from_ssl_object,
    validate_ae_title,
)
from aiodicom.aio._tls_reload import ReloadingServerContext

__all__ = [
    "AE_URI_SCHEME",
    "PROFILES",
    "TLS12_CIPHERS_B12",
    "TLS12_CIPHERS_B13",
    "TLS13_SUITES_B13",
    "PeerIdentity",
    "ReloadingServerContext",
    "ae_title_allowed",
    "ae_title_to_uri",
    "ae_titles_from_certificate",
    "check_key_strength",
    "client_context",
    "identity_from_certificate",
    "identity_from_der",
    "identity_from_ssl_object",
    "load_pem_crls",
    "profile_gaps",
    "server_context",
    "validate_ae_title",
]

for _name in ("PeerIdentity", "ReloadingServerContext"):
    globals()[_name].__module__ = __name__
del _name
