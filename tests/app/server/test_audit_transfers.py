"""Issue 17 item 4: Query, Instances Transferred per study and transfer (received and sent),
and the association's user identity in every message (PS3.15 A.5.3)."""

from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.events import AssociationAccepted, AssociationEnded, RequestCompleted
from aiodicom.app.server.audit import AuditTrail
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.run import _handlers
from tests.conftest import make_runner, write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"
INFO = dataclasses.replace(
    AssociationInfo(id=9, calling_ae_title="WS1", called_ae_title="AIODICOM",
                    peer_address=("10.1.2.3", 4000)), user="dr.who")
sync = make_runner("asyncio")


def messages(path: Path) -> list[ET.Element]:
    return [ET.fromstring(line) for line in path.read_text().splitlines()]


def event_id(msg: ET.Element) -> str:
    found = msg.find("EventIdentification/EventID")
    assert found is not None
    return str(found.get("csd-code"))


def stored(uid: str, status: int = 0) -> RequestCompleted:
    return RequestCompleted(info=INFO, service="C-STORE", sop_class_uid=CT,
                            sop_instance_uid=uid, status=status, bytes=10, duration=0.1)


def ended() -> AssociationEnded:
    return AssociationEnded(info=INFO, peer_address=INFO.peer_address, aborted=False,
                            reason="released", bytes_received=0, duration=1.0)


def test_received_instances_one_message_per_study_with_its_uid(tmp_path: Path) -> None:
    audit = AuditTrail(tmp_path / "a.log")
    audit(AssociationAccepted(info=INFO))
    for sop, study in (("1.1", "2.25.1"), ("1.2", "2.25.1"), ("1.3", "2.25.2")):
        audit.note_stored(INFO, sop, study)
        audit(stored(sop))
    audit(stored("1.4", status=0xA700))  # failed: never stored, study unknown
    assert [event_id(m) for m in messages(tmp_path / "a.log")] == ["110114"]  # not yet
    audit(ended())
    msgs = messages(tmp_path / "a.log")
    transfers = [m for m in msgs if event_id(m) == "110104"]
    assert len(transfers) == 3
    by_study = {m.find("ParticipantObjectIdentification").get("ParticipantObjectID"): m  # type: ignore[union-attr]
                for m in transfers}
    assert set(by_study) == {"2.25.1", "2.25.2", ""}
    first = by_study["2.25.1"]
    assert [i.get("UID") for i in first.iter("Instance")] == ["1.1", "1.2"]
    assert first.find(".//SOPClass").get("NumberOfInstances") == "2"  # type: ignore[union-attr]
    assert first.find("EventIdentification").get("EventOutcomeIndicator") == "0"  # type: ignore[union-attr]
    assert by_study[""].find("EventIdentification").get("EventOutcomeIndicator") == "8"  # type: ignore[union-attr]
    for msg in msgs:  # login, transfers, logout: each names the user
        users = [p.get("UserID") for p in msg.iter("ActiveParticipant")]
        assert "dr.who" in users, ET.tostring(msg)


class FakeQR:
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    async def find(self, request: Any) -> Any:
        yield Dataset()

    async def get(self, request: Any) -> Any:
        for f in self.files:
            yield f

    move = get


def test_find_get_move_are_audited(tmp_path: Path) -> None:
    root = tmp_path / "s"
    (root / "2.25.7" / "2.25.8").mkdir(parents=True)
    files = [write_ct(root / "2.25.7" / "2.25.8" / f"2.25.{n}.dcm", study_uid="2.25.7",
                      sop_instance_uid=f"2.25.{n}") for n in (10, 11)]
    audit = AuditTrail(tmp_path / "a.log")
    handlers = _handlers(ServeOptions(port=0, storage=root), FakeQR(files), audit)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "Doe^J*"
    command = type("Cmd", (), {"affected_sop_class_uid": "1.2.840.10008.5.1.4.1.2.2.1"})()
    request = type("Rq", (), {"association": INFO, "command": command,
                              "identifier": identifier, "destination": "VIEWER"})()

    async def drain(gen: Any) -> list[Any]:
        return [item async for item in gen]

    assert len(sync(drain(handlers.find(request)))) == 1
    assert sync(drain(handlers.get(request))) == files
    audit(RequestCompleted(info=INFO, service="C-GET", sop_class_uid="x", sop_instance_uid=None,
                           status=0, bytes=0, duration=0.1))
    assert sync(drain(handlers.move(request))) == files
    audit(RequestCompleted(info=INFO, service="C-MOVE", sop_class_uid="x",
                           sop_instance_uid=None, status=0xB000, bytes=0, duration=0.1))
    query, got, moved = messages(tmp_path / "a.log")
    assert event_id(query) == "110112"
    raw = base64.b64decode(query.findtext(".//ParticipantObjectQuery") or "")
    assert b"Doe^J*" in raw
    for msg in (got, moved):
        assert event_id(msg) == "110104"
        obj = msg.find("ParticipantObjectIdentification")
        assert obj is not None and obj.get("ParticipantObjectID") == "2.25.7"
        assert [i.get("UID") for i in obj.iter("Instance")] == ["2.25.10", "2.25.11"]
    assert "VIEWER" in [p.get("UserID") for p in moved.iter("ActiveParticipant")]
    assert moved.find("EventIdentification").get("EventOutcomeIndicator") == "0"  # type: ignore[union-attr]
    for msg in (query, got, moved):
        assert "dr.who" in [p.get("UserID") for p in msg.iter("ActiveParticipant")]
