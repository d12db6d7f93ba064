"""The aiodicom certificate authority (PS3.15 B.12): root, per-organization intermediates,
server and client certificates that carry AE titles, revocation, CRLs, client bundles.

`aiodicom pki` is `cli`; the library is `ca` (issuing), `revoke` (revocation, CRLs,
listing), `bundle` (client bundles, the development PKI) and `files` (keys, PEM, index).
The names below are re-exported lazily (PEP 562): `aiodicom serve` builds the `pki`
parser but never loads the library or cryptography.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports on first use
    from aiodicom.app.pki.bundle import DEV_CLIENT_AE_TITLES as DEV_CLIENT_AE_TITLES
    from aiodicom.app.pki.bundle import ClientBundle as ClientBundle
    from aiodicom.app.pki.bundle import DevPKI as DevPKI
    from aiodicom.app.pki.bundle import ensure_dev_pki as ensure_dev_pki
    from aiodicom.app.pki.bundle import export_bundle as export_bundle
    from aiodicom.app.pki.ca import CA as CA
    from aiodicom.app.pki.ca import IssuedCertificate as IssuedCertificate
    from aiodicom.app.pki.ca import init_ca as init_ca
    from aiodicom.app.pki.ca import issue_client as issue_client
    from aiodicom.app.pki.ca import issue_server as issue_server
    from aiodicom.app.pki.cli import add_subparsers as add_subparsers
    from aiodicom.app.pki.cli import main as main
    from aiodicom.app.pki.files import CertKind as CertKind
    from aiodicom.app.pki.files import CertRecord as CertRecord
    from aiodicom.app.pki.revoke import list_certs as list_certs
    from aiodicom.app.pki.revoke import revoke as revoke
    from aiodicom.app.pki.revoke import write_crl as write_crl

_HOMES = {
    "CA": "ca",
    "DEV_CLIENT_AE_TITLES": "bundle",
    "CertKind": "files",
    "CertRecord": "files",
    "ClientBundle": "bundle",
    "DevPKI": "bundle",
    "IssuedCertificate": "ca",
    "add_subparsers": "cli",
    "ensure_dev_pki": "bundle",
    "export_bundle": "bundle",
    "init_ca": "ca",
    "issue_client": "ca",
    "issue_server": "ca",
    "list_certs": "revoke",
    "main": "cli",
    "revoke": "revoke",
    "write_crl": "revoke",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """`pki.revoke` is the function, as before the names were lazy, although importing the
    submodule `revoke` sets the package's attribute of that name to the module."""

    @property
    def revoke(self) -> Any:
        from aiodicom.app.pki.revoke import revoke

        return revoke

    @revoke.setter
    def revoke(self, value: Any) -> None:
        pass  # the import system records the submodule here: the name stays the function


sys.modules[__name__].__class__ = _Package
