"""The console's JSON API: enrol (PEM and PKCS#12), CSR signing, revoke, policy check,
activity, and live associations of a server in the same loop."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from aiodicom.aio.tls import load_pem_crls
from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.pki.files import read_index
from tests.app.console.conftest import running

ENROL = {"ae_titles": ["CT01"], "org": "Radiology East", "groups": ["ct"], "days": 30}


def _csr(cn: str, ae_uris: list[str]) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Anything The Modality Says")]))
    if ae_uris:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in ae_uris]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key


def test_enrol_pem_bundle_is_the_only_copy_of_the_key(
        pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> tuple[dict[str, Any], bytes]:
        async with running(pki, dicom_host="pacs.example.org", dicom_port=2762) as c:
            await c.login()
            response = await c.post_json("/api/enrol", {**ENROL, "format": "pem"})
            assert response.status == 201
            data = await response.json()
            blob = await (await c.http.get(c.url + data["download"])).read()
            return data, blob

    data, blob = arun(go())
    cert = data["certificate"]
    assert cert["subject"] == "CN=CT01,OU=ct,O=Radiology East"
    assert cert["ae_titles"] == ["CT01"] and cert["expiring"] is True
    assert data["passphrase"] is None
    assert "storescu -aet CT01 -aec AIODICOM +tls" in data["commands"]["storescu"]
    assert " pacs.example.org 2762 FILE" in data["commands"]["storescu"]
    files = zipfile.ZipFile(io.BytesIO(blob))
    names = sorted(files.namelist())
    key_name = next(n for n in names if n.endswith(".key"))
    crt_name = key_name[:-4] + ".crt"
    assert names == sorted(["README.txt", "ca.crt", crt_name, key_name])
    chain = x509.load_pem_x509_certificates(files.read(crt_name))
    key = serialization.load_pem_private_key(files.read(key_name), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == (
        chain[0].public_key().public_bytes(serialization.Encoding.DER, spki))
    assert len(chain) == 2  # leaf + Radiology East intermediate
    assert {p.name for p in pki.rglob("*.key")} == {"ca.key"}  # only the CAs' own keys


def test_enrol_pkcs12_with_a_passphrase_shown_once(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> tuple[dict[str, Any], bytes]:
        async with running(pki) as c:
            await c.login()
            data = await (await c.post_json("/api/enrol", {**ENROL, "format": "p12"})).json()
            blob = await (await c.http.get(c.url + data["download"])).read()
            listing = await (await c.http.get(c.url + "/api/certificates")).text()
            assert data["passphrase"] not in listing
            return data, blob

    data, blob = arun(go())
    key, cert, extra = pkcs12.load_key_and_certificates(blob, data["passphrase"].encode())
    assert cert is not None and key is not None
    assert cert.subject.rfc4514_string() == "CN=CT01,OU=ct,O=Radiology East"
    assert len(extra) == 2  # intermediate + root
    assert "openssl pkcs12 -in" in data["commands"]["unpack"]


def test_csr_is_signed_with_the_consoles_subject(pki: Path, arun: Callable[..., Any]) -> None:
    pem, key = _csr("MR07", ["dicom-ae:MR07"])

    async def go() -> dict[str, Any]:
        async with running(pki) as c:
            await c.login()
            response = await c.post_json("/api/csr", {"csr": pem.decode(),
                                                      "org": "Radiology East"})
            assert response.status == 201, await response.text()
            data: dict[str, Any] = await response.json()
            blob = await (await c.http.get(c.url + data["download"])).read()
            data["blob"] = blob
            return data

    data = arun(go())
    assert data["certificate"]["subject"] == "CN=MR07,O=Radiology East"
    files = zipfile.ZipFile(io.BytesIO(data["blob"]))
    assert not any(n.endswith(".key") for n in files.namelist())
    crt = next(n for n in files.namelist() if n != "ca.crt")
    leaf = x509.load_pem_x509_certificates(files.read(crt))[0]
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert "YOUR.key" in data["commands"]["storescu"]


def test_csr_for_another_organizations_ae_title_is_refused(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users.root]\npasscode = "{hash_passcode("r")}"\n'
                     f'[users.east]\npasscode = "{hash_passcode("e")}"\n'
                     'org = "Radiology East"\n')

    async def go() -> None:
        async with running(pki, users=users) as c:
            for name, passcode in (("root", "r"), ("east", "e")):
                c.http.cookie_jar.clear()
                await c.http.post(c.url + "/login", data={"name": name,
                                                          "passcode": passcode})
                c.csrf = (await (await c.http.get(c.url + "/api/session")).json())["csrf"]
                if name == "root":  # West's echo station owns ECHO9
                    west = {**ENROL, "ae_titles": ["ECHO9"], "org": "Cardiology West"}
                    assert (await c.post_json("/api/enrol", west)).status == 201
            pem, _key = _csr("innocent", ["dicom-ae:ECHO9"])
            response = await c.post_json("/api/csr", {"csr": pem.decode()})
            assert response.status == 400
            assert "belongs to 'Cardiology West'" in (await response.json())["error"]
            pem, _key = _csr("ECHO9", [])  # asked for through the CN instead
            assert (await c.post_json("/api/csr", {"csr": pem.decode()})).status == 400
            forged = (await c.post_json("/api/csr", {"csr": "-----BEGIN CERTIFICATE REQUEST"
                                                     "-----\nAAAA\n"}))
            assert forged.status == 400

    arun(go())
    titles = [r.ae_titles for r in read_index(pki).records if r.kind.value == "client"]
    assert titles == [("ECHO9",)]
    audit = (pki / "console" / "audit.log").read_text()
    assert "refused to sign a CSR" in audit and 'UserID="east"' in audit


def test_revoke_republishes_the_crl_and_reloads_the_server(
        pki: Path, arun: Callable[..., Any]) -> None:
    reloads: list[int] = []

    async def go() -> tuple[str, dict[str, Any]]:
        async with running(pki, reload_trust=lambda: reloads.append(1)) as c:
            await c.login()
            data = await (await c.post_json("/api/enrol", ENROL)).json()
            serial = data["certificate"]["serial"]
            assert (await c.post_json(f"/api/certificates/{serial}/revoke", {})).status == 400
            response = await c.post_json(f"/api/certificates/{serial}/revoke",
                                         {"reason": "key compromise",
                                          "code": "keyCompromise"})
            assert response.status == 200
            result = await response.json()
            row = await (await c.http.get(f"{c.url}/api/certificates/{serial}")).json()
            assert row["status"] == "revoked" and row["revocation_reason"] == "key compromise"
            activity = await (await c.http.get(
                f"{c.url}/api/activity?event=revoke&org=Radiology%20East")).json()
            assert [e["who"] for e in activity["entries"]] == ["admin"]
            return serial, result

    serial, result = arun(go())
    assert result["server_reloaded"] is True and len(reloads) == 2  # enrol + revoke
    crls = load_pem_crls((pki / "crl.pem").read_bytes())
    revoked = {r.serial_number: r for crl in crls for r in crl}
    assert int(serial, 16) in revoked
    entry_reason = revoked[int(serial, 16)].extensions.get_extension_for_class(x509.CRLReason)
    assert entry_reason.value.reason == x509.ReasonFlags.key_compromise
    assert result["code"] == "keyCompromise"


def test_policy_check_answers_with_the_servers_rules(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('default = "deny"\n[[rule]]\norganization = "Radiology East"\n'
                      'group = "ct"\nservices = ["verification", "storage"]\n')

    async def go() -> None:
        async with running(pki, policy=policy) as c:
            await c.login()
            table = await (await c.http.get(c.url + "/api/policy")).json()
            assert table["rules"][0]["services"] == ["storage", "verification"]
            question = {"calling_ae": "CT01", "organization": "Radiology East",
                        "groups": ["ct"], "operation": "C-MOVE"}
            answer = await (await c.post_json("/api/policy/check", question)).json()
            assert answer["current"]["allowed"] is False and answer["service"] == "retrieve"
            proposed = policy.read_text().replace('"storage"]', '"storage", "retrieve"]')
            answer = await (await c.post_json("/api/policy/check",
                                              {**question, "proposed": proposed})).json()
            assert answer["current"]["allowed"] is False
            assert answer["proposed"] == {"allowed": True, "rule": 1,
                                          "why": "rule 1 allows retrieve"}
            store = await (await c.post_json("/api/policy/check",
                                             {**question, "operation": "C-STORE"})).json()
            assert store["current"]["allowed"] is True

    arun(go())


def test_connected_now_lists_and_aborts_a_live_association(
        pki: Path, arun: Callable[..., Any]) -> None:
    from aiodicom.aio.client import connect
    from aiodicom.aio.server import Server
    from aiodicom.core.negotiation import VERIFICATION_SOP_CLASS, AcceptorPolicy
    from aiodicom.errors import AssociationAborted
    from aiodicom.settings import AssociationSettings

    async def go() -> None:
        server = Server(admission=AcceptorPolicy(ae_title=None, abstract_syntaxes={
            VERIFICATION_SOP_CLASS: ("1.2.840.10008.1.2",)}))
        host, port = await server.listen("127.0.0.1", 0)
        try:
            async with running(pki, server=server) as c:
                await c.login()
                async with connect(host, port, called_ae_title="AIODICOM",
                                   settings=AssociationSettings(ae_title="CT01")) as assoc:
                    await assoc.echo()
                    rows = (await (await c.http.get(c.url + "/api/associations")).json())[
                        "associations"]
                    assert [(r["calling_ae"], r["operations"]) for r in rows] == [("CT01", 1)]
                    assert rows[0]["bytes_received"] > 0 and rows[0]["since"]
                    response = await c.post_json(f"/api/associations/{rows[0]['id']}/abort",
                                                 {})
                    assert response.status == 200
                    try:
                        await asyncio.wait_for(assoc.echo(), 10)
                        raise AssertionError("the aborted association still answers")
                    except (AssociationAborted, ConnectionError, OSError):
                        pass
                again = await c.post_json(f"/api/associations/{rows[0]['id']}/abort", {})
                assert again.status == 404
        finally:
            await server.close(drain_timeout=1)

    arun(go())
