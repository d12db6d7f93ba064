"""app.audit: PS3.15 A.5 audit messages for accept, store, refusal, start/stop, syslog."""

from __future__ import annotations

import base64
import datetime as dt
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.events import AssociationAccepted, AssociationEnded, RequestCompleted
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.aio.tls import PeerIdentity
from aiodicom.app.server.audit import AuditTrail
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    reject_no_reason,
)
from aiodicom.core.pdu import AAssociateRJ, AAssociateRQ
from aiodicom.errors import AssociationRejected, ConfigurationError
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"


def messages(path: Path) -> list[ET.Element]:
    lines = path.read_text("utf-8").splitlines()
    return [ET.fromstring(line) for line in lines]


def event(msg: ET.Element) -> tuple[str, str | None, str]:
    """(EventID code, EventTypeCode code or None, outcome)."""
    ident = msg.find("EventIdentification")
    assert ident is not None
    event_id = ident.find("EventID")
    type_code = ident.find("EventTypeCode")
    assert event_id is not None and event_id.get("codeSystemName") == "DCM"
    return (event_id.get("csd-code", ""), type_code.get("csd-code") if type_code is not None
            else None, ident.get("EventOutcomeIndicator", ""))


def requestor(msg: ET.Element) -> ET.Element:
    found = [p for p in msg.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
    assert len(found) == 1
    return found[0]


def check_common(msg: ET.Element, source_id: str = "STRICT") -> None:
    ident = msg.find("EventIdentification")
    assert ident is not None
    when = dt.datetime.fromisoformat(ident.get("EventDateTime", ""))
    assert when.tzinfo is not None
    source = msg.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == source_id
    assert [child.tag for child in msg][0] == "EventIdentification"


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        ae_title="STRICT",
        abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
                           CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
    )


def test_accept_store_refusals_end_to_end(run: Any, tmp_path: Path) -> None:
    good = write_ct(tmp_path / "good.dcm", size=1000)
    bad = write_ct(tmp_path / "bad.dcm", size=1000)
    bad_uid = pydicom.dcmread(bad).SOPInstanceUID
    log_path = tmp_path / "audit.log"

    async def on_store(request: StoreRequest) -> Status:
        async for _ in request.fragments():
            pass
        return Status(0xA700) if request.sop_instance_uid == bad_uid else Status.SUCCESS

    async def authorize(info: AssociationInfo, rq: AAssociateRQ) -> AAssociateRJ | None:
        return reject_no_reason() if info.calling_ae_title == "INTRUDER" else None

    async def main() -> None:
        audit = AuditTrail(log_path, source_id="STRICT", ae_title="STRICT")
        server = Server(
            admission=Admission(policy=_policy(), authorize=authorize),
            handlers=Handlers(store=on_store),
            observer=audit,
        )
        host, port = await server.listen()
        async with connect(host, port, called_ae_title="STRICT",
                           contexts=storage_contexts_for([good])) as assoc:
            assert await assoc.store(good) == Status.SUCCESS
            assert await assoc.store(bad) == Status(0xA700)
        with pytest.raises(AssociationRejected):
            async with connect(host, port, called_ae_title="OTHER"):
                pass
        from aiodicom.settings import AssociationSettings

        with pytest.raises(AssociationRejected):
            async with connect(host, port, called_ae_title="STRICT",
                               settings=AssociationSettings(ae_title="INTRUDER")):
                pass
        await server.close()
        audit.close()

    run(main())
    msgs = messages(log_path)
    for msg in msgs:
        check_common(msg)
    codes = [event(m) for m in msgs]
    assert codes == [
        ("110114", "110122", "0"),    # login accepted
        ("110104", None, "8"),        # one study, both stores; one answered 0xA700
        ("110114", "110123", "0"),    # released
        ("110114", "110122", "4"),    # called AE refused: failed login, no alert
        ("110114", "110122", "4"),    # authorizer refused ...
        ("110113", "110126", "4"),    # ... which is a security alert too
    ]
    login, stored = msgs[0], msgs[1]
    peer = requestor(login)
    assert peer.get("UserID") == "AIODICOM"  # no certificate: the AE title
    assert peer.get("AlternativeUserID") == "AETITLES=AIODICOM"
    assert peer.get("NetworkAccessPointID") == "127.0.0.1"
    assert peer.get("NetworkAccessPointTypeCode") == "2"
    role = peer.find("RoleIDCode")
    assert role is not None and role.get("csd-code") == "110153"
    us = [p for p in login.findall("ActiveParticipant") if p.get("UserIsRequestor") == "false"]
    assert us[0].get("UserID") == "STRICT"
    stored_ident = stored.find("EventIdentification")
    assert stored_ident is not None and stored_ident.get("EventActionCode") == "C"
    study = stored.find("ParticipantObjectIdentification")
    assert study is not None
    id_type = study.find("ParticipantObjectIDTypeCode")
    assert id_type is not None and id_type.get("csd-code") == "110180"
    sop_class = study.find("SOPClass")
    assert sop_class is not None and sop_class.get("UID") == CT
    assert [i.get("UID") for i in sop_class.iter("Instance")] == [
        pydicom.dcmread(good).SOPInstanceUID, bad_uid]
    description = stored.findtext("EventIdentification/EventOutcomeDescription") or ""
    assert "0xA700" in description
    alert = msgs[5]
    assert requestor(alert).get("AlternativeUserID") == "AETITLES=INTRUDER"
    detail = alert.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert detail is not None
    assert b"no reason" in base64.b64decode(detail.get("value", ""))


def _identity() -> PeerIdentity:
    return PeerIdentity(
        subject="CN=CT01,OU=radiology,O=Hospital <A&B>", common_name="CT01",
        organization="Hospital <A&B>", groups=("radiology",), ae_titles=("CT01",),
        fingerprint_sha256="ab" * 32, serial=7,
        not_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )


def test_certificate_subject_is_the_user_id_and_escaping_holds(tmp_path: Path) -> None:
    info = AssociationInfo(id=1, calling_ae_title="CT\x01<01>", called_ae_title="PACS",
                           peer_address=("10.0.0.9", 40000), identity=_identity())
    audit = AuditTrail(tmp_path / "a.log")
    audit(AssociationAccepted(info=info))
    audit(RequestCompleted(info=info, service="C-ECHO", sop_class_uid=VERIFICATION_SOP_CLASS,
                           sop_instance_uid=None, status=0, bytes=0, duration=0.01))
    audit(RequestCompleted(info=info, service="C-STORE", sop_class_uid=CT,
                           sop_instance_uid="1.2.3", status=0xB000, bytes=10, duration=0.1))
    audit(AssociationEnded(info=info, peer_address=info.peer_address, aborted=True,
                           reason="aborted by the peer\napplication", bytes_received=1,
                           duration=1.0))
    audit(AssociationEnded(info=None, peer_address=None, aborted=True, reason="dropped",
                           bytes_received=0, duration=0.0))
    audit.close()
    msgs = messages(tmp_path / "a.log")
    assert [event(m) for m in msgs] == [
        ("110114", "110122", "0"), ("110104", None, "0"), ("110114", "110123", "4")]
    # received instances go out when the association ends, before its logout
    peer = requestor(msgs[0])
    assert peer.get("UserID") == "CN=CT01,OU=radiology,O=Hospital <A&B>"
    assert peer.get("UserName") == "CT01"
    assert peer.get("AlternativeUserID") == "AETITLES=CT\ufffd<01>"
    us = [p for p in msgs[0].findall("ActiveParticipant") if p.get("UserIsRequestor") == "false"]
    assert us[0].get("UserID") == "PACS"  # no ae_title given: the called AE title
    warning = msgs[1].findtext("EventIdentification/EventOutcomeDescription") or ""
    assert "0xB000" in warning
    assert msgs[2].findtext("EventIdentification/EventOutcomeDescription") == (
        "aborted by the peer\napplication")


def test_application_start_stop_and_append(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("<AuditMessage/>\n")
    audit = AuditTrail(path, source_id="SITE-A", ae_title="PACS")
    audit.application_started()
    audit.application_stopped()
    audit.close()
    msgs = messages(path)
    assert len(msgs) == 3  # appended, the earlier line kept
    assert [event(m) for m in msgs[1:]] == [("110100", "110120", "0"),
                                            ("110100", "110121", "0")]
    check_common(msgs[1], "SITE-A")
    codes = [p.get("csd-code") for p in msgs[1].iterfind("ActiveParticipant/RoleIDCode")]
    assert codes == ["110150", "110151"]  # the application, then who launched it


def test_syslog_rfc5424_over_udp(tmp_path: Path) -> None:
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(5)
    port = collector.getsockname()[1]
    try:
        audit = AuditTrail(tmp_path / "a.log", source_id="PACS", syslog=f"127.0.0.1:{port}")
        audit.application_started()
        audit.close()
        datagram = collector.recv(65535)
    finally:
        collector.close()
    header, bom, xml = datagram.partition(b"\xef\xbb\xbf")
    assert bom
    fields = header.decode("ascii").split(" ")
    assert fields[0] == "<85>1"  # facility 10 (authpriv) * 8 + severity 5 (notice)
    assert fields[2:6] == [socket.gethostname(), "PACS", fields[4], "DICOM+RFC3881"]
    assert fields[6] == "-" and fields[7] == ""
    assert dt.datetime.fromisoformat(fields[1].replace("Z", "+00:00")).tzinfo is not None
    assert event(ET.fromstring(xml)) == ("110100", "110120", "0")
    assert xml.decode() + "\n" == (tmp_path / "a.log").read_text()


@pytest.mark.parametrize("target", ["nohost", "127.0.0.1:", "127.0.0.1:70000", ":514"])
def test_syslog_target_is_checked(tmp_path: Path, target: str) -> None:
    with pytest.raises(ConfigurationError):
        AuditTrail(tmp_path / "a.log", syslog=target)
