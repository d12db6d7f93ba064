"""The DICOM audit trail: PS3.15 A.5 (RFC 3881-style) AuditMessages, one XML line each.

`AuditTrail` is a `Server` observer. It appends one ``<AuditMessage>`` per line to a file
(one ``write`` on an ``O_APPEND`` descriptor, so worker processes may share the file) and,
optionally, sends it as RFC 5424 syslog over UDP (PS3.15 A.6, MSGID ``DICOM+RFC3881``).

Messages (PS3.15 A.5.3, codes from PS3.16 CID 400-404):
- association accepted: User Authentication (110114) / Login (110122), outcome 0;
- association refused: User Authentication / Login, outcome 4, plus Security Alert (110113) /
  Node Authentication (110126) when the refusal is about who the peer is (calling AE title
  not recognized, certificate/AE binding, or an authorizer's "no reason given");
- association ended: User Authentication / Logout (110123), outcome 0 released, 4 aborted;
- C-STOREs received: DICOM Instances Transferred (110104), action C, one message per study
  and association listing its instances (flushed when the association ends); outcome 0 when
  every instance was stored (warnings included), 8 when any failed;
- each C-FIND: Query (110112), the identifier base64 in ParticipantObjectQuery (A.5.3.10);
- each C-GET/C-MOVE: DICOM Instances Transferred, action R, one message per study sent,
  the peer (C-GET) or the move destination as Destination, us as Source;
- every message about an association names its user identity (username, JWT ``sub``) as a
  second requesting ActiveParticipant;
- application start/stop: Application Activity (110100) / 110120, 110121.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import getpass
import logging
import os
import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    AssociationRefused,
    RequestCompleted,
    ServerEvent,
)
from aiodicom.core.dimse import Status
from aiodicom.errors import ConfigurationError

__all__ = ["AuditTrail", "Outcome"]

log = logging.getLogger("aiodicom.audit")

Code = tuple[str, str, str]
"""(code value, coding scheme designator, code meaning)."""

APPLICATION_ACTIVITY: Code = ("110100", "DCM", "Application Activity")
INSTANCES_TRANSFERRED: Code = ("110104", "DCM", "DICOM Instances Transferred")
QUERY: Code = ("110112", "DCM", "Query")
SECURITY_ALERT: Code = ("110113", "DCM", "Security Alert")
USER_AUTHENTICATION: Code = ("110114", "DCM", "User Authentication")
APPLICATION_START: Code = ("110120", "DCM", "Application Start")
APPLICATION_STOP: Code = ("110121", "DCM", "Application Stop")
LOGIN: Code = ("110122", "DCM", "Login")
LOGOUT: Code = ("110123", "DCM", "Logout")
NODE_AUTHENTICATION: Code = ("110126", "DCM", "Node Authentication")
ROLE_APPLICATION: Code = ("110150", "DCM", "Application")
ROLE_LAUNCHER: Code = ("110151", "DCM", "Application Launcher")
ROLE_DESTINATION: Code = ("110152", "DCM", "Destination Role ID")
ROLE_SOURCE: Code = ("110153", "DCM", "Source Role ID")
STUDY_INSTANCE_UID: Code = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID")
NODE_ID: Code = ("110182", "DCM", "Node ID")

_SECURITY_REFUSALS = {(1, 1), (1, 3)}
"""(source, reason) of refusals about the peer's identity: PS3.8 Table 9-21 service-user
"no reason given" (what authorizers and identity checks answer) and "calling AE title not
recognized" (certificate/AE-title binding)."""

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class Outcome:
    """EventOutcomeIndicator values (PS3.15 A.5.1, RFC 3881)."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


def _clean(text: str) -> str:
    """Text XML 1.0 can carry (peer-supplied AE titles may hold control characters)."""
    return _NOT_XML.sub("\ufffd", text)


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1],
                                       "originalText": code[2]})


def _store_outcome(status: int) -> tuple[str, str]:
    code = Status(status)
    category = code.category.value
    if category in ("success", "warning"):
        return Outcome.SUCCESS, "" if category == "success" else (
            f"stored with warning 0x{status:04X}: {code.description}")
    return Outcome.SERIOUS_FAILURE, f"not stored: 0x{status:04X} {code.description}"


@dataclass(slots=True)
class _Transfer:
    """Instances of one study in one transfer, by SOP class, and the worst outcome."""

    instances: dict[str, list[str]] = field(default_factory=dict)
    outcome: str = Outcome.SUCCESS
    failures: list[str] = field(default_factory=list)


class AuditTrail:
    """Writes PS3.15 A.5 audit messages for server events to ``path`` (and to syslog).

    ``source_id`` names us in AuditSourceIdentification; ``ae_title`` (default: the called AE
    title of each association) is the destination participant; ``syslog`` is ``HOST:PORT``.
    """

    wants_requests = True
    """Stores and transfers are audited from `RequestCompleted` (`aio.events.wants_requests`)."""

    def __init__(self, path: Path | str, *, source_id: str = "AIODICOM",
                 syslog: str | None = None, ae_title: str | None = None,
                 enterprise_site_id: str | None = None) -> None:
        self.path = Path(path)
        self.source_id = source_id
        self.ae_title = ae_title
        self.enterprise_site_id = enterprise_site_id
        self.hostname = socket.gethostname()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o640)
        self._syslog: tuple[socket.socket, tuple[object, ...]] | None = None
        if syslog is not None:
            self._syslog = _open_syslog(syslog)
        self._failed = False
        self._studies: dict[int, dict[str, _Transfer]] = {}
        """Received instances per association id and Study Instance UID, until it ends."""
        self._sent: dict[int, list[tuple[str, dict[str, _Transfer]]]] = {}
        """C-GET/C-MOVE transfers whose files were all handed out, awaiting the final status."""
        self._study_of: dict[tuple[int, str], str] = {}
        """(association id, SOP Instance UID) -> Study Instance UID, from the store handler."""

    # -- sinks --------------------------------------------------------------------------------

    def write(self, message: ET.Element) -> None:
        """Append one message as one line; then send it to syslog, if configured."""
        text = ET.tostring(message, encoding="unicode").replace("\n", "&#10;")
        try:
            os.write(self._fd, (text + "\n").encode("utf-8"))
        except OSError as exc:
            if not self._failed:
                log.error("audit messages are being lost: cannot write %s: %s", self.path, exc)
            self._failed = True
        else:
            self._failed = False
        if self._syslog is not None:
            self._send_syslog(text)

    def _send_syslog(self, xml_text: str) -> None:
        assert self._syslog is not None
        sock, address = self._syslog
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        header = f"<85>1 {stamp} {_header_field(self.hostname, 255)} " \
                 f"{_header_field(self.source_id, 48)} {os.getpid()} DICOM+RFC3881 - "
        datagram = header.encode("ascii") + b"\xef\xbb\xbf" + xml_text.encode()
        try:
            sock.sendto(datagram[:65507], address)
        except OSError as exc:  # full buffer, unreachable collector: the file still has it
            log.debug("audit syslog send failed: %s", exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._syslog is not None:
            self._syslog[0].close()
            self._syslog = None

    # -- message building ---------------------------------------------------------------------

    def _message(self, event_id: Code, action: str, outcome: str, type_code: Code | None,
                 description: str = "") -> ET.Element:
        root = ET.Element("AuditMessage")
        ident = ET.SubElement(root, "EventIdentification", {
            "EventActionCode": action,
            "EventDateTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": outcome,
        })
        _coded(ident, "EventID", event_id)
        if type_code is not None:
            _coded(ident, "EventTypeCode", type_code)
        if description:
            ET.SubElement(ident, "EventOutcomeDescription").text = _clean(description)
        return root

    def _finish(self, root: ET.Element) -> ET.Element:
        attrs = {"AuditSourceID": self.source_id}
        if self.enterprise_site_id:
            attrs["AuditEnterpriseSiteID"] = self.enterprise_site_id
        source = ET.SubElement(root, "AuditSourceIdentification", attrs)
        ET.SubElement(source, "AuditSourceTypeCode", {
            "csd-code": "4", "codeSystemName": "RFC-3881",
            "originalText": "Application Server Process"})
        return root

    def _peer(self, root: ET.Element, info: AssociationInfo, role: Code = ROLE_SOURCE) -> None:
        """The requesting peer: certificate subject (or AE title), its AE title and address."""
        identity = info.identity
        subject = getattr(identity, "subject", "") if identity is not None else ""
        attrs = {
            "UserID": _clean(subject or info.calling_ae_title),
            "AlternativeUserID": _clean(f"AETITLES={info.calling_ae_title}"),
            "UserIsRequestor": "true",
        }
        common_name = str(getattr(identity, "common_name", "") or "")
        if common_name:
            attrs["UserName"] = _clean(common_name)
        if info.peer_address is not None:
            attrs["NetworkAccessPointID"] = info.peer_address[0]
            attrs["NetworkAccessPointTypeCode"] = "2"
        _coded(ET.SubElement(root, "ActiveParticipant", attrs), "RoleIDCode", role)
        self._user(root, info)

    @staticmethod
    def _user(root: ET.Element, info: AssociationInfo) -> None:
        """The association's user identity (PS3.7 D.3.3.7: username or JWT subject), if any."""
        user = getattr(info, "user", None)
        if user:
            ET.SubElement(root, "ActiveParticipant", {
                "UserID": _clean(str(user)), "UserIsRequestor": "true"})

    def _us(self, root: ET.Element, info: AssociationInfo | None, role: Code) -> None:
        ae = self.ae_title or (info.called_ae_title if info is not None else self.source_id)
        participant = ET.SubElement(root, "ActiveParticipant", {
            "UserID": _clean(ae),
            "AlternativeUserID": _clean(f"AETITLES={ae}"),
            "UserIsRequestor": "false",
            "NetworkAccessPointID": self.hostname,
            "NetworkAccessPointTypeCode": "1",
        })
        _coded(participant, "RoleIDCode", role)

    # -- events -------------------------------------------------------------------------------

    def __call__(self, event: ServerEvent) -> None:
        if isinstance(event, RequestCompleted):
            if event.service == "C-STORE":
                uid = event.sop_instance_uid or ""
                study = self._study_of.pop((event.info.id, uid), "")
                self._collect(self._studies.setdefault(event.info.id, {}), study,
                              event.sop_class_uid, uid, event.status)
            elif event.service in ("C-GET", "C-MOVE"):
                pending = self._sent.get(event.info.id)
                if pending:
                    destination, studies = pending.pop(0)
                    self._transferred_out(event.info, destination, studies, event.status)
        elif isinstance(event, AssociationAccepted):
            self.authentication(event.info, LOGIN, Outcome.SUCCESS)
        elif isinstance(event, AssociationRefused):
            self.authentication(event.info, LOGIN, Outcome.MINOR_FAILURE, event.why)
            rj = event.response
            if (rj.source, rj.reason) in _SECURITY_REFUSALS:
                self.security_alert(event.info, event.why)
        elif isinstance(event, AssociationEnded) and event.info is not None:
            self.flush(event.info)
            self.authentication(event.info, LOGOUT,
                                Outcome.MINOR_FAILURE if event.aborted else Outcome.SUCCESS,
                                event.reason if event.aborted else "")

    def authentication(self, info: AssociationInfo, kind: Code, outcome: str,
                       description: str = "") -> None:
        """User Authentication (PS3.15 A.5.3.12): the peer's login or logout at our AE."""
        root = self._message(USER_AUTHENTICATION, "E", outcome, kind, description)
        self._peer(root, info)
        self._us(root, info, ROLE_DESTINATION)
        self.write(self._finish(root))

    def security_alert(self, info: AssociationInfo, why: str) -> None:
        """Security Alert (A.5.3.11) / Node Authentication: a peer refused for who it is."""
        root = self._message(SECURITY_ALERT, "E", Outcome.MINOR_FAILURE, NODE_AUTHENTICATION,
                             why)
        self._us(root, info, ROLE_APPLICATION)
        self._peer(root, info)
        self._finish(root)
        node = info.peer_address[0] if info.peer_address else info.calling_ae_title
        obj = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(node),
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "13",
        })
        _coded(obj, "ParticipantObjectIDTypeCode", NODE_ID)
        ET.SubElement(obj, "ParticipantObjectDetail", {
            "type": "Alert Description",
            "value": base64.b64encode(_clean(why).encode()).decode("ascii"),
        })
        self.write(root)

    def instance_received(self, info: AssociationInfo, sop_class_uid: str,
                          sop_instance_uid: str, status: int,
                          study_uid: str | None = None) -> None:
        """DICOM Instances Transferred (A.5.3.4) for one C-STORE we received.

        The study participant's ID is ``study_uid`` when known, "" otherwise (the C-STORE
        command names only the SOP instance, which goes in SOPClass/Instance).
        """
        outcome, description = _store_outcome(status)
        root = self._message(INSTANCES_TRANSFERRED, "C", outcome, None, description)
        self._peer(root, info)
        self._us(root, info, ROLE_DESTINATION)
        self._finish(root)
        study = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(study_uid or ""),
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        })
        _coded(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
        sop_class = ET.SubElement(study, "SOPClass", {
            "UID": _clean(sop_class_uid), "NumberOfInstances": "1"})
        ET.SubElement(sop_class, "Instance", {"UID": _clean(sop_instance_uid)})
        self.write(root)

    # -- transfers and queries ---------------------------------------------------------------

    def note_stored(self, info: AssociationInfo, sop_instance_uid: str, study_uid: str) -> None:
        """The store handler tells us the study of an instance it stored (the C-STORE
        command names only the instance)."""
        self._study_of[(info.id, sop_instance_uid)] = study_uid

    @staticmethod
    def _collect(studies: dict[str, _Transfer], study: str, sop_class_uid: str,
                 sop_instance_uid: str, status: int) -> None:
        transfer = studies.setdefault(study, _Transfer())
        transfer.instances.setdefault(sop_class_uid, []).append(sop_instance_uid)
        outcome, description = _store_outcome(status)
        if outcome != Outcome.SUCCESS:
            transfer.outcome = outcome
        if description:
            transfer.failures.append(f"{sop_instance_uid[:64]} {description}")

    def flush(self, info: AssociationInfo) -> None:
        """One Instances Transferred message per study received on ``info``'s association."""
        for key in [k for k in self._study_of if k[0] == info.id]:
            del self._study_of[key]
        self._sent.pop(info.id, None)
        for study, transfer in self._studies.pop(info.id, {}).items():
            root = self._message(INSTANCES_TRANSFERRED, "C", transfer.outcome, None,
                                 "; ".join(transfer.failures[:5]))
            self._peer(root, info)
            self._us(root, info, ROLE_DESTINATION)
            self._finish(root)
            self._study(root, study, transfer)
            self.write(root)

    def instances_sent(self, info: AssociationInfo, destination: str,
                       files: list[tuple[str, str, str]]) -> None:
        """A C-GET (``destination`` "") or C-MOVE handed out ``files`` (study, SOP class,
        SOP instance); the message goes out with the request's final status."""
        studies: dict[str, _Transfer] = {}
        for study, sop_class, sop_instance in files:
            transfer = studies.setdefault(study, _Transfer())
            transfer.instances.setdefault(sop_class, []).append(sop_instance)
        self._sent.setdefault(info.id, []).append((destination, studies))

    def _transferred_out(self, info: AssociationInfo, destination: str,
                         studies: dict[str, _Transfer], status: int) -> None:
        outcome, description = _store_outcome(status)
        for study, transfer in studies.items():
            root = self._message(INSTANCES_TRANSFERRED, "R", outcome, None,
                                 description.replace("not stored", "not all sent"))
            ae = self.ae_title or info.called_ae_title
            source = ET.SubElement(root, "ActiveParticipant", {
                "UserID": _clean(ae), "AlternativeUserID": _clean(f"AETITLES={ae}"),
                "UserIsRequestor": "false", "NetworkAccessPointID": self.hostname,
                "NetworkAccessPointTypeCode": "1"})
            _coded(source, "RoleIDCode", ROLE_SOURCE)
            if destination:  # C-MOVE: the peer asked, the destination received
                self._peer(root, info, ROLE_APPLICATION)
                dest = ET.SubElement(root, "ActiveParticipant", {
                    "UserID": _clean(destination),
                    "AlternativeUserID": _clean(f"AETITLES={destination}"),
                    "UserIsRequestor": "false"})
                _coded(dest, "RoleIDCode", ROLE_DESTINATION)
            else:  # C-GET: the peer asked and received
                self._peer(root, info, ROLE_DESTINATION)
            self._finish(root)
            self._study(root, study, transfer)
            self.write(root)

    @staticmethod
    def _study(root: ET.Element, study_uid: str, transfer: _Transfer) -> None:
        study = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(study_uid),
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        })
        _coded(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
        for sop_class_uid, instances in transfer.instances.items():
            sop_class = ET.SubElement(study, "SOPClass", {
                "UID": _clean(sop_class_uid), "NumberOfInstances": str(len(instances))})
            for uid in instances:
                ET.SubElement(sop_class, "Instance", {"UID": _clean(uid)})

    def query(self, info: AssociationInfo, sop_class_uid: str, identifier: bytes) -> None:
        """Query (A.5.3.10) for one C-FIND: the identifier, base64, as the query."""
        root = self._message(QUERY, "E", Outcome.SUCCESS, None)
        self._peer(root, info)
        self._us(root, info, ROLE_DESTINATION)
        self._finish(root)
        obj = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(sop_class_uid),
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        })
        _coded(obj, "ParticipantObjectIDTypeCode", SOP_CLASS_UID)
        ET.SubElement(obj, "ParticipantObjectQuery").text = base64.b64encode(
            identifier).decode("ascii")
        ET.SubElement(obj, "ParticipantObjectDetail", {
            "type": "TransferSyntax",
            "value": base64.b64encode(b"1.2.840.10008.1.2.1").decode("ascii")})
        self.write(root)

    def application_started(self) -> None:
        """Application Activity (A.5.3.1) / Application Start."""
        self._application(APPLICATION_START)

    def application_stopped(self) -> None:
        """Application Activity / Application Stop."""
        self._application(APPLICATION_STOP)

    def _application(self, kind: Code) -> None:
        root = self._message(APPLICATION_ACTIVITY, "E", Outcome.SUCCESS, kind)
        ae = self.ae_title or self.source_id
        app = ET.SubElement(root, "ActiveParticipant", {
            "UserID": _clean(ae), "AlternativeUserID": f"AETITLES={_clean(ae)}",
            "UserName": f"aiodicom pid {os.getpid()}", "UserIsRequestor": "false",
            "NetworkAccessPointID": self.hostname, "NetworkAccessPointTypeCode": "1",
        })
        _coded(app, "RoleIDCode", ROLE_APPLICATION)
        with contextlib.suppress(Exception):
            user = getpass.getuser()
            launcher = ET.SubElement(root, "ActiveParticipant", {
                "UserID": _clean(user), "UserIsRequestor": "true"})
            _coded(launcher, "RoleIDCode", ROLE_LAUNCHER)
        self.write(self._finish(root))


def _header_field(text: str, limit: int) -> str:
    """An RFC 5424 §6 header field: 1*limit PRINTUSASCII (33-126), else "-" (NILVALUE).

    AE titles may hold spaces (PS3.5 VR AE) and host names non-ASCII; a space would shift
    every later field, so each character outside 33-126 becomes "_".
    """
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text.strip(" "))[:limit]
    return cleaned or "-"


def _open_syslog(target: str) -> tuple[socket.socket, tuple[object, ...]]:
    host, sep, port_text = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"audit syslog {target!r} is not HOST:PORT (e.g. 127.0.0.1:514)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port_text), type=socket.SOCK_DGRAM)[0]
    except OSError as exc:
        raise ConfigurationError(f"audit syslog host {host!r} does not resolve: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    return sock, tuple(address)
