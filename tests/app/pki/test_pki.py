"""The aiodicom certificate authority: library API and the `pki` command line."""

from __future__ import annotations

import ipaddress
import json
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiodicom.aio.tls import load_pem_crls
from aiodicom.app import pki
from aiodicom.errors import ConfigurationError


def certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(kind).value


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "ca"
    pki.init_ca(directory, org="East")
    return directory


@pytest.fixture
def fresh(ca: Path, tmp_path: Path) -> Path:
    """A private copy of the module CA, for tests that change it."""
    copy = tmp_path / "ca"
    shutil.copytree(ca, copy)
    return copy


# --- init -------------------------------------------------------------------------------------


def test_init_writes_root_and_intermediate(ca: Path) -> None:
    assert mode(ca / "ca.key") == 0o600
    assert mode(ca / "orgs" / "East" / "ca.key") == 0o600
    (root,) = certs(ca / "ca.crt")
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    assert ext(root, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=1)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    (inter,) = certs(ca / "orgs" / "East" / "ca.crt")
    inter.verify_directly_issued_by(root)
    assert inter.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "East"
    assert ext(inter, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=0)
    index = json.loads((ca / "index.json").read_text())
    assert [c["kind"] for c in index["certificates"]] == ["intermediate"]


def test_init_refuses_existing_ca_but_adds_orgs(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (fresh / "ca.crt").read_bytes()
    assert pki.main(["pki", "init", str(fresh)]) == 1
    assert "already holds a CA" in capsys.readouterr().err
    assert pki.main(["pki", "init", str(fresh), "--org", "West", "--org", "North"]) == 0
    assert (fresh / "ca.crt").read_bytes() == before
    assert pki.init_ca(fresh, org="South").organizations == ("East", "North", "South", "West")
    with pytest.raises(ConfigurationError, match="already exists"):
        pki.init_ca(fresh, org="West")
    assert pki.main(["pki", "init", str(fresh), "--force"]) == 0
    assert (fresh / "ca.crt").read_bytes() != before


def test_init_rsa_and_bad_names(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "rsa", key_type="rsa")
    key = certs(ca.cert)[0].public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    with pytest.raises(ConfigurationError, match="unknown key type"):
        pki.init_ca(tmp_path / "dsa", key_type="dsa")
    for bad in ["../evil", ".hidden", "a/b", ""]:
        with pytest.raises(ConfigurationError, match="organization"):
            pki.init_ca(tmp_path / "rsa", org=bad)


# --- issue ------------------------------------------------------------------------------------


def test_issue_server(ca: Path, tmp_path: Path) -> None:
    issued = pki.issue_server(ca, name="pacs.example.org", ips=["10.0.0.5", "::1"],
                              out=tmp_path / "pacs")
    assert issued.cert == tmp_path / "pacs.crt" and issued.key == tmp_path / "pacs.key"
    assert mode(issued.key) == 0o600
    (leaf,) = certs(issued.cert)
    leaf.verify_directly_issued_by(certs(ca / "ca.crt")[0])
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["pacs.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")
    ]
    assert list(ext(leaf, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(leaf, x509.BasicConstraints).ca is False
    assert leaf.subject.rfc4514_string() == "CN=pacs.example.org"
    days = (leaf.not_valid_after_utc - datetime.now(UTC)).days
    assert 823 <= days <= 825
    assert issued.record.kind is pki.CertKind.SERVER


def test_issue_server_ip_literal_name(ca: Path, tmp_path: Path) -> None:
    issued = pki.issue_server(ca, name="127.0.0.1", out=tmp_path / "ip")
    san = ext(certs(issued.cert)[0], x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == []
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(ConfigurationError, match="not an IPv4 or IPv6"):
        pki.issue_server(ca, name="h", ips=["300.1.1.1"], out=tmp_path / "bad")


def test_issue_client_with_org_intermediate(ca: Path, tmp_path: Path) -> None:
    issued = pki.issue_client(ca, ae_titles=["CT01", "CT 02"], org="East",
                              groups=["ct", "night"], out=tmp_path / "ct01", days=30)
    assert mode(issued.key) == 0o600
    leaf, inter = certs(issued.cert)  # the chain travels with the certificate
    assert inter.subject.rfc4514_string() == "CN=aiodicom East CA,O=East"
    leaf.verify_directly_issued_by(inter)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CT01"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "East"
    assert [a.value for a in leaf.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)] == ["ct", "night"]
    uris = ext(leaf, x509.SubjectAlternativeName).get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["dicom-ae:CT01", "dicom-ae:CT%2002"]
    assert list(ext(leaf, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    rec = issued.record
    assert (rec.ae_titles, rec.org, rec.groups, rec.signed_by) == (
        ("CT01", "CT 02"), "East", ("ct", "night"), "East")
    assert 29 <= (rec.not_after - datetime.now(UTC)).days <= 30


def test_issue_client_org_without_intermediate_is_signed_by_root(ca: Path, tmp_path: Path) -> None:
    issued = pki.issue_client(ca, ae_titles=["MR1"], org="Elsewhere", out=tmp_path / "mr1",
                              key_type="rsa")
    (leaf,) = certs(issued.cert)
    leaf.verify_directly_issued_by(certs(ca / "ca.crt")[0])
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert issued.record.signed_by is None and issued.record.org == "Elsewhere"


@pytest.mark.parametrize("titles", [[], [""], ["A" * 17], ["BACK\\SLASH"]])
def test_issue_client_bad_ae_titles(ca: Path, tmp_path: Path, titles: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="(?i)AE.title"):
        pki.issue_client(ca, ae_titles=titles, out=tmp_path / "x")
    assert not (tmp_path / "x.key").exists()


def test_issue_refuses_to_overwrite_unless_forced(ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "twice"
    first = pki.issue_client(ca, ae_titles=["A"], out=out)
    key_before = first.key.read_bytes()
    with pytest.raises(ConfigurationError, match="already exists.*--force"):
        pki.issue_client(ca, ae_titles=["A"], out=out)
    assert first.key.read_bytes() == key_before
    second = pki.issue_client(ca, ae_titles=["A"], out=out, force=True)
    assert second.key.read_bytes() != key_before and mode(second.key) == 0o600


def test_uninitialised_directory(tmp_path: Path) -> None:
    for call in (
        lambda: pki.issue_server(tmp_path, name="h", out=tmp_path / "s"),
        lambda: pki.list_certs(tmp_path),
        lambda: pki.write_crl(tmp_path),
    ):
        with pytest.raises(ConfigurationError, match="not an initialised aiodicom CA.*pki init"):
            call()


def test_expired_ca(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    pki.init_ca(tmp_path / "old", not_before=now - timedelta(days=20),
                not_after=now - timedelta(days=1))
    with pytest.raises(ConfigurationError, match="expired on .*pki init NEWDIR"):
        pki.issue_client(tmp_path / "old", ae_titles=["A"], out=tmp_path / "a")


def test_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = pki.init_ca(tmp_path / "short", not_after=now + timedelta(days=10))
    issued = pki.issue_client(tmp_path / "short", ae_titles=["A"], out=tmp_path / "a")
    assert certs(issued.cert)[0].not_valid_after_utc <= ca.not_after


# --- revoke, crl, list ------------------------------------------------------------------------


def test_revoke_and_crl(fresh: Path, tmp_path: Path) -> None:
    plain = pki.issue_client(fresh, ae_titles=["A"], out=tmp_path / "a")
    org = pki.issue_client(fresh, ae_titles=["B"], org="East", out=tmp_path / "b")
    keep = pki.issue_client(fresh, ae_titles=["C"], out=tmp_path / "c")
    rec = pki.revoke(fresh, plain.cert)
    assert rec.revoked and rec.revoked_at is not None
    assert pki.revoke(fresh, plain.cert).revoked_at == rec.revoked_at  # idempotent
    pki.revoke(fresh, org.cert)
    crl_path = pki.write_crl(fresh, days=7)
    assert crl_path == fresh / "crl.pem"
    root_crl, org_crl = load_pem_crls(crl_path.read_bytes())
    root, inter = certs(fresh / "ca.crt")[0], certs(fresh / "orgs" / "East" / "ca.crt")[0]
    assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert org_crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert {r.serial_number for r in root_crl} == {plain.record.serial}
    assert {r.serial_number for r in org_crl} == {org.record.serial}
    assert root_crl.get_revoked_certificate_by_serial_number(keep.record.serial) is None
    assert root_crl.next_update_utc is not None
    assert 6 <= (root_crl.next_update_utc - datetime.now(UTC)).days <= 7
    status = {r.serial: r.revoked for r in pki.list_certs(fresh)}
    assert status[plain.record.serial] and status[org.record.serial]
    assert not status[keep.record.serial]
    number = root_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    again = load_pem_crls(pki.write_crl(fresh).read_bytes())[0]
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1


def test_revoked_intermediate_cannot_issue(fresh: Path, tmp_path: Path) -> None:
    pki.revoke(fresh, fresh / "orgs" / "East" / "ca.crt")
    with pytest.raises(ConfigurationError, match="intermediate CA of 'East'.*revoked"):
        pki.issue_client(fresh, ae_titles=["A"], org="East", out=tmp_path / "a")


def test_revoke_refuses_foreign_root_and_junk(ca: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other)
    foreign = pki.issue_client(other, ae_titles=["X"], out=tmp_path / "x")
    with pytest.raises(ConfigurationError, match="not issued by the CA"):
        pki.revoke(ca, foreign.cert)
    with pytest.raises(ConfigurationError, match="root CA itself"):
        pki.revoke(ca, ca / "ca.crt")
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        pki.revoke(ca, junk)
    with pytest.raises(ConfigurationError, match="not found"):
        pki.revoke(ca, tmp_path / "missing.crt")
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        pki.revoke(ca, ca / "ca.key")


def test_list_records(tmp_path: Path) -> None:
    fresh = tmp_path / "ca"
    pki.init_ca(fresh, org="East")
    pki.issue_server(fresh, name="h", ips=["10.1.1.1"], out=tmp_path / "h")
    pki.issue_client(fresh, ae_titles=["CT9"], org="East", groups=["g1"], out=tmp_path / "c")
    records = pki.list_certs(fresh)
    kinds = [r.kind for r in records]
    assert kinds == [pki.CertKind.INTERMEDIATE, pki.CertKind.SERVER, pki.CertKind.CLIENT]
    server, client = records[1], records[2]
    assert server.dns_names == ("h",) and server.ip_addresses == ("10.1.1.1",)
    assert (client.ae_titles, client.org, client.groups) == (("CT9",), "East", ("g1",))
    assert client.path == str((tmp_path / "c.crt").resolve())


# --- export -----------------------------------------------------------------------------------


def test_export_bundle(ca: Path, tmp_path: Path) -> None:
    issued = pki.issue_client(ca, ae_titles=["CT01"], org="East", out=tmp_path / "ct01")
    bundle = pki.export_bundle(ca, issued.cert, tmp_path / "bundle", host="pacs.example.org")
    assert sorted(p.name for p in bundle.directory.iterdir()) == [
        "README.txt", "ca.crt", "ct01.crt", "ct01.key"]
    assert mode(bundle.key) == 0o600
    assert bundle.key.read_bytes() == issued.key.read_bytes()
    assert len(certs(bundle.cert)) == 2  # leaf + intermediate
    assert bundle.ca.read_bytes() == (ca / "ca.crt").read_bytes()
    readme = bundle.readme.read_text()
    assert ("aiodicom store pacs.example.org 2762 FILE_OR_FOLDER... --calling-ae CT01 "
            "--called-ae AIODICOM --tls --cert ct01.crt --key ct01.key --ca ca.crt") in readme
    assert ("storescu -aet CT01 -aec AIODICOM +tls ct01.key ct01.crt +cf ca.crt "
            "pacs.example.org 2762 FILE...") in readme
    assert "echoscu -aet CT01" in readme
    with pytest.raises(ConfigurationError, match="already exists"):
        pki.export_bundle(ca, issued.cert, tmp_path / "bundle")
    pki.export_bundle(ca, issued.cert, tmp_path / "bundle", force=True)


def test_export_refusals(fresh: Path, tmp_path: Path) -> None:
    server = pki.issue_server(fresh, name="h", out=tmp_path / "h")
    with pytest.raises(ConfigurationError, match="not a client certificate"):
        pki.export_bundle(fresh, server.cert, tmp_path / "b1")
    client = pki.issue_client(fresh, ae_titles=["A"], out=tmp_path / "a")
    other = pki.issue_client(fresh, ae_titles=["B"], out=tmp_path / "b")
    with pytest.raises(ConfigurationError, match="not the private key"):
        pki.export_bundle(fresh, client.cert, tmp_path / "b2", key=other.key)
    pki.revoke(fresh, client.cert)
    with pytest.raises(ConfigurationError, match="revoked"):
        pki.export_bundle(fresh, client.cert, tmp_path / "b3")
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b3").exists()


# --- dev PKI ----------------------------------------------------------------------------------


def test_ensure_dev_pki_is_idempotent(tmp_path: Path) -> None:
    dev = pki.ensure_dev_pki(tmp_path / "dev")
    for path in (dev.ca_cert, dev.crl, dev.server_cert, dev.server_key, dev.client_cert,
                 dev.client_key):
        assert path.is_file()
    assert dev.ca == dev.ca_cert
    assert mode(dev.server_key) == mode(dev.client_key) == 0o600
    san = ext(certs(dev.server_cert)[0], x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {"STORESCU", "ECHOSCU", "AIODICOM"} <= set(dev.client_ae_titles)
    before = {p: p.read_bytes() for p in (dev.ca_cert, dev.server_cert, dev.client_cert, dev.crl)}
    again = pki.ensure_dev_pki(tmp_path / "dev")
    assert again == dev
    assert {p: p.read_bytes() for p in before} == before
    moved = pki.ensure_dev_pki(tmp_path / "dev", server_name="pacs.local")
    assert moved.client_cert.read_bytes() == before[dev.client_cert]
    assert moved.server_cert.read_bytes() != before[dev.server_cert]


# --- command line -----------------------------------------------------------------------------


def test_cli_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "ca")
    assert pki.main(["pki", "init", d, "--org", "East"]) == 0
    assert pki.main(["pki", "issue", d, "server", "--name", "localhost", "--ip", "127.0.0.1",
                     "--out", str(tmp_path / "srv")]) == 0
    assert pki.main(["pki", "issue", d, "client", "--ae-title", "CT01", "--ae-title", "CT02",
                     "--org", "East", "--group", "ct", "--out", str(tmp_path / "ct01")]) == 0
    out = capsys.readouterr().out
    assert "AE titles: CT01, CT02" in out and "East intermediate" in out
    assert pki.main(["pki", "export", d, str(tmp_path / "ct01.crt"), "--out",
                     str(tmp_path / "bundle")]) == 0
    assert (tmp_path / "bundle" / "README.txt").is_file()
    assert pki.main(["pki", "revoke", d, str(tmp_path / "ct01.crt")]) == 0
    assert (tmp_path / "ca" / "crl.pem").is_file()
    assert pki.main(["pki", "crl", d, "--days", "3"]) == 0
    capsys.readouterr()
    assert pki.main(["pki", "list", d]) == 0
    listing = capsys.readouterr().out
    assert "revoked" in listing and "CT01, CT02" in listing and "127.0.0.1" in listing


def test_cli_errors_are_one_line_with_exit_1(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert pki.main(["pki", "list", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aiodicom pki: error: ") and "pki init" in err
    assert err.count("\n") == 1
    assert pki.main(["pki", "init", str(tmp_path / "c")]) == 0
    argv = ["pki", "issue", str(tmp_path / "c"), "client", "--ae-title", "WAY_TOO_LONG_AE_TITLE"]
    assert pki.main([*argv, "--out", str(tmp_path / "x")]) == 1
    assert "maximum is 16" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["pki"], "pki init ca/"),
        (["pki", "init"], "--org NAME"),
        (["pki", "issue", "D", "server"], "--name HOST"),
        (["pki", "issue", "D", "client"], "dicom-ae"),
        (["pki", "revoke"], "CERTFILE"),
        (["pki", "crl"], "next-update"),
        (["pki", "list"], "List every certificate"),
        (["pki", "export"], "README.txt"),
    ],
)
def test_cli_help(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pki.main([*argv, "--help"])
    assert exc.value.code == 0
    assert needle in capsys.readouterr().out


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pki.main(["pki", "issue", "D", "client", "--out", "x"])
    assert exc.value.code == 2
    assert "--ae-title" in capsys.readouterr().err
