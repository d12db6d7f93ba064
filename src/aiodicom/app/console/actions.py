"""The console's changes, shared by the pages and /api: each checks the administrator's
scope (an organization's administrator acts on that organization only), does the work
through `pki_ops`/`live`, reloads the running server's trust when the CRL changed, and
writes one audit message naming the administrator (success or refusal)."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiodicom.app.console.auth import Admin
from aiodicom.app.console.pki_ops import Download, Enrolment, requested_ae_titles, split_list
from aiodicom.app.console.queue import Request
from aiodicom.app.console.web import ConsoleContext
from aiodicom.app.server.audit import Outcome
from aiodicom.errors import ConfigurationError

__all__ = ["ActionError", "abort_association", "add_organization", "approve", "enrol",
           "maybe_queue", "publish_trust", "reject", "revoke", "sign_csr", "take_download",
           "visible"]

log = logging.getLogger("aiodicom.console")


class ActionError(Exception):
    """A change refused: `status` is the HTTP status, the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _scope_org(admin: Admin, org: str | None) -> str | None:
    if admin.org is not None and (org or admin.org) != admin.org:
        raise ActionError(f"{admin.name} administers {admin.org!r} only, not {org!r}", 403)
    return org if admin.org is None else admin.org


def visible(admin: Admin, org: str | None) -> bool:
    """Whether `admin` may see a thing of organization `org` (its own organization's only,
    for an organization's administrator; everything for one of every organization)."""
    return admin.org is None or org == admin.org


def _require_admin(admin: Admin, what: str) -> None:
    """A requester files requests only (an administrator approves them)."""
    if admin.role != "admin":
        raise ActionError(f"{admin.name} is a requester: only administrators {what}", 403)


def _require_owner(admin: Admin, org: str | None) -> None:
    """Refuse an organization's administrator a thing that exists already and is not that
    organization's, including one of no organization (a root-issued or server certificate,
    an association without one, a request filed for none): unlike a new enrolment, "no
    organization" here is not "yours"."""
    if admin.org is not None and org != admin.org:
        raise ActionError(f"{admin.name} administers {admin.org!r} only, not "
                          f"{org or 'no organization'!r}", 403)


def _listed(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return split_list(str(value or ""))


def enrol(ctx: ConsoleContext, admin: Admin, data: dict[str, Any]) -> Enrolment:
    """Enrol a modality from form or JSON fields: ae_titles, org, groups, days, format."""
    titles = _listed(data.get("ae_titles"))
    org = str(data.get("org") or "").strip() or None
    groups = _listed(data.get("groups"))
    try:
        days = int(str(data.get("days") or 365))
    except ValueError:
        raise ActionError("validity (days) must be a whole number") from None
    fmt = str(data.get("format") or "pem")
    what = f"AE titles {', '.join(titles) or '-'} of {org or 'no organization'}"
    try:
        org = _scope_org(admin, org)
        enrolment = ctx.pki.enrol(ae_titles=titles, org=org, groups=groups, days=days,
                                  fmt=fmt, now=time.monotonic(), owner=admin.name)
    except (ActionError, ConfigurationError) as exc:
        ctx.audit.change(admin, "C", f"refused enrolment of {what}: {exc}", event="enrol",
                         org=org, outcome=Outcome.MINOR_FAILURE)
        if isinstance(exc, ActionError):
            raise
        raise ActionError(str(exc)) from exc
    if ctx.reload_trust is not None:  # enrol may have republished the CRL (a new issuer)
        ctx.reload_trust()
    record = enrolment.record
    ctx.audit.change(admin, "C", f"enrolled {record.subject} ({what}, groups "
                     f"{', '.join(groups) or '-'}, until {record.not_after:%Y-%m-%d}, "
                     f"{fmt} download)", event="enrol", object_id=format(record.serial, "X"),
                     object_name=record.subject, org=org)
    return enrolment


def sign_csr(ctx: ConsoleContext, admin: Admin, csr_pem: bytes,
             data: dict[str, Any]) -> Enrolment:
    """Sign an uploaded CSR (fields as `enrol`; no AE titles: those the CSR asks for)."""
    titles = _listed(data.get("ae_titles"))
    org = str(data.get("org") or "").strip() or None
    groups = _listed(data.get("groups"))
    try:
        days = int(str(data.get("days") or 365))
    except ValueError:
        raise ActionError("validity (days) must be a whole number") from None
    try:
        org = _scope_org(admin, org)
        enrolment = ctx.pki.sign_csr(csr_pem, ae_titles=titles, org=org, groups=groups,
                                     days=days, now=time.monotonic(), owner=admin.name)
    except (ActionError, ConfigurationError) as exc:
        ctx.audit.change(admin, "C", f"refused to sign a CSR for {org or 'no organization'}"
                         f" ({', '.join(titles) or 'AE titles from the CSR'}): {exc}",
                         event="csr", org=org, outcome=Outcome.MINOR_FAILURE)
        if isinstance(exc, ActionError):
            raise
        raise ActionError(str(exc)) from exc
    if ctx.reload_trust is not None:
        ctx.reload_trust()
    record = enrolment.record
    ctx.audit.change(admin, "C", f"signed the CSR of {record.subject} (AE titles "
                     f"{', '.join(record.ae_titles)}, until {record.not_after:%Y-%m-%d})",
                     event="csr", object_id=format(record.serial, "X"),
                     object_name=record.subject, org=org)
    return enrolment


def take_download(ctx: ConsoleContext, admin: Admin, token: str) -> Download:
    download = ctx.pki.take_download(token, time.monotonic(), admin.name)
    if download is None:
        raise ActionError("no such download: each one is handed out once, for 10 minutes", 404)
    ctx.audit.change(admin, "R", f"downloaded {download.filename} (its key's only copy)",
                     event="download", object_id=download.serial, object_name=download.filename)
    return download


def revoke(ctx: ConsoleContext, admin: Admin, serial: str, reason: str,
           abort: bool, code: str | None = None) -> dict[str, Any]:
    """Revoke, republish the CRL, reload the running server's trust, abort if asked."""
    reason = " ".join(reason.split())[:200]
    if not reason:
        raise ActionError("give a reason for the revocation")
    try:
        record = ctx.pki.find(serial)
    except ConfigurationError as exc:
        raise ActionError(str(exc), 404) from exc
    try:
        _require_admin(admin, "revoke certificates")
        _require_owner(admin, record.org)
        record = ctx.pki.revoke(serial, reason, code or None)
    except (ActionError, ConfigurationError) as exc:
        ctx.audit.change(admin, "D", f"refused revocation of {record.subject}: {exc}",
                         event="revoke", object_id=serial, object_name=record.subject,
                         org=record.org, outcome=Outcome.MINOR_FAILURE)
        raise ActionError(str(exc), getattr(exc, "status", 400)) from exc
    reloaded = False
    if ctx.reload_trust is not None:
        try:
            ctx.reload_trust()
            reloaded = True
        except Exception:  # the revocation stands; the server's 2 s poll retries
            log.exception("console: reloading the server's trust files failed")
    aborted = ctx.live.abort_serial(format(record.serial, "X")) if abort else []
    ctx.audit.change(admin, "D", f"revoked {record.subject} ({reason}"
                     + (f", {code}" if code else "") + "); CRL republished"
                     + (f"; {len(aborted)} association(s) aborted" if aborted else ""),
                     event="revoke", object_id=format(record.serial, "X"),
                     object_name=record.subject, org=record.org)
    return {"serial": format(record.serial, "X"), "subject": record.subject,
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
            "reason": reason, "code": record.revocation_reason,
            "crl": str(ctx.pki.directory / "crl.pem"),
            "server_reloaded": reloaded, "aborted": [a["id"] for a in aborted]}


def abort_association(ctx: ConsoleContext, admin: Admin, assoc_id: int) -> dict[str, Any]:
    row = next((r for r in ctx.live.rows() if r["id"] == assoc_id), None)
    if row is None:
        raise ActionError(f"association {assoc_id} is not connected", 404)
    _require_admin(admin, "abort associations")
    _require_owner(admin, row["organization"])
    done = ctx.live.abort(assoc_id)
    if done is None:
        raise ActionError(f"association {assoc_id} ended meanwhile", 404)
    ctx.audit.change(admin, "E", f"aborted association {assoc_id} of {row['calling_ae']} "
                     f"from {row['peer']} ({row['subject'] or 'no certificate'})",
                     event="abort", object_id=row["serial"] or str(assoc_id),
                     object_name=row["subject"] or row["calling_ae"],
                     org=row["organization"], restricted=True)
    return done


def add_organization(ctx: ConsoleContext, admin: Admin, name: str) -> dict[str, Any]:
    name = name.strip()
    _require_admin(admin, "add organizations")
    if admin.org is not None:
        raise ActionError("only an administrator of every organization adds organizations", 403)
    try:
        ctx.pki.add_organization(name)
    except ConfigurationError as exc:
        raise ActionError(str(exc)) from exc
    if ctx.reload_trust is not None:  # its intermediate's CRL is in crl.pem now
        ctx.reload_trust()
    ctx.audit.change(admin, "C", f"created the intermediate CA of organization {name!r}",
                     event="organization", object_id=name, object_name=name, org=name)
    return {"name": name}


def maybe_queue(ctx: ConsoleContext, admin: Admin, kind: str, data: dict[str, Any],
                csr_pem: bytes = b"") -> Request | None:
    """File the enrolment or CSR in the approval queue when the user is a requester or asks
    for it (``queue``); None when it is to be done at once. Checked now as at approval."""
    if admin.role != "requester" and str(data.get("queue") or "") not in ("1", "on", "True",
                                                                          "true"):
        return None
    org = str(data.get("org") or "").strip() or None
    titles = _listed(data.get("ae_titles"))
    try:
        org = _scope_org(admin, org)
        if kind == "csr" and not titles:
            titles = requested_ae_titles(csr_pem)
        titles = ctx.pki.check_titles(titles, org)
        days = int(str(data.get("days") or 365))
    except (ActionError, ConfigurationError, ValueError) as exc:
        ctx.audit.change(admin, "C", f"refused request for {', '.join(titles) or '-'}: {exc}",
                         event="request", org=org, outcome=Outcome.MINOR_FAILURE)
        raise ActionError(str(exc), getattr(exc, "status", 400)) from exc
    request = ctx.pki.queue.file(kind=kind, requested_by=admin.name, org=org,
                                 ae_titles=tuple(titles), groups=tuple(_listed(data.get("groups"))),
                                 days=days, format=str(data.get("format") or "pem"),
                                 csr=csr_pem.decode("ascii", "replace"))
    ctx.audit.change(admin, "C", f"requested {kind} of {', '.join(titles)} for "
                     f"{org or 'no organization'} (request {request.id}, awaiting approval)",
                     event="request", object_id=request.id, org=org)
    return request


def _decidable(ctx: ConsoleContext, admin: Admin, request_id: str) -> Request:
    try:
        request = ctx.pki.queue.get(request_id)
    except ConfigurationError as exc:
        raise ActionError(str(exc), 404) from exc
    if admin.role != "admin":
        raise ActionError("requesters cannot approve or reject requests", 403)
    if request.requested_by == admin.name:
        raise ActionError("nobody approves their own request", 403)
    _require_owner(admin, request.org)
    if request.status != "pending":
        raise ActionError(f"request {request_id} is already {request.status}", 409)
    return request


def approve(ctx: ConsoleContext, admin: Admin, request_id: str) -> Enrolment:
    """Do what the request asked (the download goes to the approver, to hand over)."""
    request = _decidable(ctx, admin, request_id)
    data = {"ae_titles": list(request.ae_titles), "org": request.org,
            "groups": list(request.groups), "days": request.days, "format": request.format}
    if request.kind == "csr":
        enrolment = sign_csr(ctx, admin, request.csr.encode(), data)
    else:
        enrolment = enrol(ctx, admin, data)
    ctx.pki.queue.decide(request_id, status="approved", decided_by=admin.name,
                         serial=format(enrolment.record.serial, "X"))
    ctx.audit.change(admin, "U", f"approved request {request_id} of {request.requested_by}",
                     event="approve", object_id=request_id, org=request.org)
    return enrolment


def reject(ctx: ConsoleContext, admin: Admin, request_id: str, reason: str) -> Request:
    request = _decidable(ctx, admin, request_id)
    reason = " ".join(reason.split())[:200] or "no reason given"
    decided = ctx.pki.queue.decide(request_id, status="rejected", decided_by=admin.name,
                                   reason=reason)
    ctx.audit.change(admin, "U", f"rejected request {request_id} of {request.requested_by}: "
                     f"{reason}", event="reject", object_id=request_id, org=request.org)
    return decided


async def publish_trust(ctx: ConsoleContext, admin: Admin) -> str | None:
    """Publish DIR/ca.crt and DIR/crl.pem to the shared object store, if one is configured,
    so every node refuses a revoked certificate (they poll it). The URL written, None when
    nothing is configured; a failure is logged and audited and raises ActionError (the
    change itself stands: publish again with `aiodicom pki publish`)."""
    if ctx.publish_url is None:
        return None
    from aiodicom.app.pki.publish import publish_async

    try:
        published = await publish_async(ctx.pki.directory, ctx.publish_url)
    except ConfigurationError as exc:
        log.error("console: publishing trust to %s failed: %s", ctx.publish_url, exc)
        ctx.audit.change(admin, "U", f"publishing the CRL to {ctx.publish_url} failed: {exc}",
                         event="publish", object_id=ctx.publish_url,
                         outcome=Outcome.SERIOUS_FAILURE)
        raise ActionError(f"the change is made but the CRL was not published to "
                          f"{ctx.publish_url}: {exc}", 502) from exc
    ctx.audit.change(admin, "U", f"published {', '.join(published.urls)} "
                     f"({published.revoked} revoked)", event="publish",
                     object_id=ctx.publish_url)
    return ctx.publish_url
