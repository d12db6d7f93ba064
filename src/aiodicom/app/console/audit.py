"""Console changes in the DICOM audit trail, and the trail read back for the Activity page.

Every change an administrator makes (enrol, download, revoke, abort, organization, login) is
one PS3.15 A.5.3.11 Security Alert AuditMessage (EventTypeCode 110129 "Security
Configuration", or 110132 "Use of Restricted Function" for aborts) naming the administrator
as the requesting ActiveParticipant and the certificate as the ParticipantObject, appended
to the same file as the server's messages (`AuditTrail.write`).
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path
from typing import Any

from aiodicom.app.console.auth import Admin
from aiodicom.app.server.audit import AuditTrail, Outcome

__all__ = ["ConsoleAudit", "read_activity"]

SECURITY_ALERT = ("110113", "DCM", "Security Alert")
SECURITY_CONFIGURATION = ("110129", "DCM", "Security Configuration")
RESTRICTED_FUNCTION = ("110132", "DCM", "Use of Restricted Function")
USER_AUTHENTICATION = ("110114", "DCM", "User Authentication")
LOGIN = ("110122", "DCM", "Login")


def _coded(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1],
                                       "originalText": code[2]})


class ConsoleAudit:
    """Writes console changes to an `AuditTrail` (the server's, or one of the console's)."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    @property
    def path(self) -> Path:
        return self.trail.path

    def change(self, admin: Admin, action: str, what: str, *, event: str,
               object_id: str = "", object_name: str = "", org: str | None = None,
               outcome: str = Outcome.SUCCESS, restricted: bool = False) -> None:
        """One change: ``event`` is a short name (enrol, revoke...), ``what`` the sentence."""
        root = ET.Element("AuditMessage")
        ident = ET.SubElement(root, "EventIdentification", {
            "EventActionCode": action,
            "EventDateTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": outcome,
        })
        if event == "login":
            _coded(ident, "EventID", USER_AUTHENTICATION)
            _coded(ident, "EventTypeCode", LOGIN)
        else:
            _coded(ident, "EventID", SECURITY_ALERT)
            _coded(ident, "EventTypeCode",
                   RESTRICTED_FUNCTION if restricted else SECURITY_CONFIGURATION)
        ET.SubElement(ident, "EventOutcomeDescription").text = f"console {event}: {what}"
        person = ET.SubElement(root, "ActiveParticipant", {
            "UserID": admin.name, "UserName": f"console administrator {admin.name}",
            "UserIsRequestor": "true",
            "NetworkAccessPointID": admin.address or "-", "NetworkAccessPointTypeCode": "2",
        })
        if admin.org:
            person.set("AlternativeUserID", f"ORG={admin.org}")
        source = ET.SubElement(root, "AuditSourceIdentification",
                               {"AuditSourceID": self.trail.source_id})
        ET.SubElement(source, "AuditSourceTypeCode", {
            "csd-code": "4", "codeSystemName": "RFC-3881",
            "originalText": "Application Server Process"})
        if object_id or object_name:
            obj = ET.SubElement(root, "ParticipantObjectIdentification", {
                "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "13",
                "ParticipantObjectID": object_id})
            _coded(obj, "ParticipantObjectIDTypeCode", ("12", "RFC-3881", "URI"))
            if object_name:
                ET.SubElement(obj, "ParticipantObjectName").text = object_name
            if org:
                ET.SubElement(obj, "ParticipantObjectDetail", {
                    "type": "Organization", "value": org})
        self.trail.write(root)


def _entry(line: str) -> tuple[dict[str, Any], list[str]] | None:
    """An entry for the page and the exact organizations it concerns."""
    try:
        root = ET.fromstring(line)
    except ET.ParseError:
        return None
    ident = root.find("EventIdentification")
    if ident is None:
        return None
    event_id = ident.find("EventID")
    type_code = ident.find("EventTypeCode")
    description = ident.findtext("EventOutcomeDescription") or ""
    users = [p.get("UserID", "") for p in root.findall("ActiveParticipant")
             if p.get("UserIsRequestor") == "true"]
    aes = [p.get("AlternativeUserID", "").removeprefix("AETITLES=")
           for p in root.findall("ActiveParticipant")
           if (p.get("AlternativeUserID") or "").startswith("AETITLES=")]
    orgs = [d.get("value", "") for d in root.iter("ParticipantObjectDetail")
            if d.get("type") == "Organization"]
    orgs += [p.get("AlternativeUserID", "").removeprefix("ORG=")
             for p in root.findall("ActiveParticipant")
             if (p.get("AlternativeUserID") or "").startswith("ORG=")]
    organizations = list(dict.fromkeys(o for o in orgs if o))
    return {
        "time": ident.get("EventDateTime", ""),
        "event": event_id.get("originalText", "") if event_id is not None else "",
        "type": type_code.get("originalText", "") if type_code is not None else "",
        "outcome": ident.get("EventOutcomeIndicator", ""),
        "who": ", ".join(u for u in users if u),
        "ae_titles": ", ".join(a for a in aes if a),
        "organization": ", ".join(organizations),
        "description": description,
    }, organizations


def read_activity(path: Path, *, limit: int = 500, org: str = "", ae_title: str = "",
                  event: str = "", scope: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` audit entries (newest first). ``scope``: the organization of the
    administrator reading (None: every organization); only entries of exactly that
    organization are read. ``org`` keeps the entries of exactly that organization (case
    aside: an organization named in a description does not count); ``ae_title`` and
    ``event`` are case-insensitive substrings of AE title (or subject/description) and
    event name."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = deque(fh, maxlen=20_000)
    except OSError:
        return []
    wanted = org.strip().casefold()
    result: list[dict[str, Any]] = []
    for line in reversed(lines):
        parsed = _entry(line)
        if parsed is None:
            continue
        entry, organizations = parsed
        if scope is not None and scope not in organizations:
            continue
        if wanted and wanted not in (o.casefold() for o in organizations):
            continue
        text = f"{entry['ae_titles']} {entry['who']} {entry['description']}".lower()
        if ae_title and ae_title.lower() not in text:
            continue
        if event and event.lower() not in f"{entry['event']} {entry['type']} " \
                                          f"{entry['description']}".lower():
            continue
        result.append(entry)
        if len(result) >= limit:
            break
    return result
