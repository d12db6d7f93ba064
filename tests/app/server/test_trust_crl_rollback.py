"""The CRL rollback check of trust_source against a bundle of CRLs from several CAs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiodicom.app.server.trust_source import _check_crl
from aiodicom.errors import ConfigurationError

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _crl(name: str, key: ec.EllipticCurvePrivateKey, number: int, revoked: tuple[int, ...] = (),
         last: datetime = NOW) -> bytes:
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .last_update(last).next_update(last + timedelta(days=7))
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_new_crl_of_one_ca_is_accepted_beside_the_unchanged_crl_of_another(
        tmp_path: Path) -> None:
    """A --crl bundle holding the CRLs of two CAs (ours and a partner's, each on its own
    schedule): a revocation by one CA publishes its new CRL beside the other's unchanged
    one. That must be applied, not refused as a rollback (the partner's CRL is not older)."""
    ours, partner = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    unchanged = _crl("Partner CA", partner, 7)
    before = _crl("Our CA", ours, 1) + unchanged
    after = _crl("Our CA", ours, 2, revoked=(1234,)) + unchanged
    _check_crl(after, before, tmp_path / "crl.pem")  # must not raise


def test_a_different_crl_with_the_same_number_is_still_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    before = _crl("Our CA", key, 3, revoked=(1,))
    replay = _crl("Our CA", key, 3)  # same number, the revocation gone
    with pytest.raises(ConfigurationError, match="rollback"):
        _check_crl(replay, before, tmp_path / "crl.pem")


def test_an_older_crl_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigurationError, match="rollback"):
        _check_crl(_crl("Our CA", key, 2), _crl("Our CA", key, 3), tmp_path / "crl.pem")
