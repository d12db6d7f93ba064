"""The console's JSON API under /api (documented in docs/console.md).

Same session cookie as the pages; every POST also needs the session's CSRF token in the
``X-CSRF-Token`` header (GET /api/session tells it). Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aiodicom.app.console import actions
from aiodicom.app.console.audit import read_activity
from aiodicom.app.console.policy_view import check_policy, policy_rows
from aiodicom.app.console.web import context, session_of

__all__ = ["add_routes"]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}',
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}',
                                 content_type="application/json")
    return data


def _error(exc: actions.ActionError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


async def get_session(request: web.Request) -> web.Response:
    session = session_of(request)
    admin = session.admin
    return web.json_response({"admin": admin.name, "organization": admin.org,
                              "csrf": session.csrf})


async def list_certificates(request: web.Request) -> web.Response:
    org = request.query.get("org") or None
    admin = session_of(request).admin
    return web.json_response({"certificates": [
        r for r in context(request).pki.rows(org=org)
        if actions.visible(admin, r["organization"])]})


async def get_certificate(request: web.Request) -> web.Response:
    serial = request.match_info["serial"].upper()
    admin = session_of(request).admin
    rows = [r for r in context(request).pki.rows()
            if r["serial"] == serial and actions.visible(admin, r["organization"])]
    if not rows:
        return web.json_response({"error": f"no certificate with serial {serial}"}, status=404)
    return web.json_response(rows[0])


async def post_enrol(request: web.Request) -> web.Response:
    ctx = context(request)
    data = await _json(request)
    try:
        queued = actions.maybe_queue(ctx, session_of(request).admin, "enrol", data)
        if queued is not None:
            return web.json_response({"request": queued.public()}, status=202)
        enrolment = actions.enrol(ctx, session_of(request).admin, data)
    except actions.ActionError as exc:
        return _error(exc)
    serial = format(enrolment.record.serial, "X")
    return web.json_response({
        "certificate": next((r for r in ctx.pki.rows() if r["serial"] == serial), None),
        "download": f"/download/{enrolment.token}",
        "filename": enrolment.filename,
        "passphrase": enrolment.passphrase,
        "commands": enrolment.commands,
    }, status=201)


async def post_csr(request: web.Request) -> web.Response:
    ctx = context(request)
    data = await _json(request)
    pem = str(data.get("csr") or "").encode()
    try:
        queued = actions.maybe_queue(ctx, session_of(request).admin, "csr", data, pem)
        if queued is not None:
            return web.json_response({"request": queued.public()}, status=202)
        enrolment = actions.sign_csr(ctx, session_of(request).admin, pem, data)
    except actions.ActionError as exc:
        return _error(exc)
    serial = format(enrolment.record.serial, "X")
    return web.json_response({
        "certificate": next((r for r in ctx.pki.rows() if r["serial"] == serial), None),
        "download": f"/download/{enrolment.token}",
        "filename": enrolment.filename,
        "commands": enrolment.commands,
    }, status=201)


async def post_revoke(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        result = actions.revoke(context(request), session_of(request).admin,
                                request.match_info["serial"].upper(),
                                str(data.get("reason") or ""), bool(data.get("abort", True)),
                                str(data.get("code") or "") or None)
        result["published"] = await actions.publish_trust(context(request),
                                                          session_of(request).admin)
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response(result)


async def list_associations(request: web.Request) -> web.Response:
    ctx = context(request)
    return web.json_response({"server": ctx.live.server is not None,
                              "associations": [
                                  r for r in ctx.live.rows()
                                  if actions.visible(session_of(request).admin,
                                                     r["organization"])]})


async def post_abort(request: web.Request) -> web.Response:
    try:
        assoc_id = int(request.match_info["assoc"])
        row = actions.abort_association(context(request), session_of(request).admin, assoc_id)
    except ValueError:
        return web.json_response({"error": "not an association id"}, status=400)
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response({"aborted": row})


async def list_organizations(request: web.Request) -> web.Response:
    admin = session_of(request).admin
    return web.json_response({"organizations": [
        o for o in context(request).pki.organizations() if actions.visible(admin, o["name"])]})


async def post_organization(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        result = actions.add_organization(context(request), session_of(request).admin,
                                          str(data.get("name") or ""))
        result["published"] = await actions.publish_trust(context(request),
                                                          session_of(request).admin)
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response(result, status=201)


async def get_activity(request: web.Request) -> web.Response:
    q = request.query
    limit = q.get("limit", "200")
    entries = read_activity(context(request).audit.path, org=q.get("org", ""),
                            ae_title=q.get("ae_title", ""), event=q.get("event", ""),
                            scope=session_of(request).admin.org,
                            limit=min(int(limit), 2000) if limit.isdigit() else 200)
    return web.json_response({"entries": entries})


async def get_policy(request: web.Request) -> web.Response:
    return web.json_response(policy_rows(context(request).policy_path))


async def post_policy_check(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        result = check_policy(context(request).policy_path, data)
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response(result)


def _enrolment_json(ctx: Any, enrolment: Any) -> dict[str, Any]:
    serial = format(enrolment.record.serial, "X")
    return {"certificate": next((r for r in ctx.pki.rows() if r["serial"] == serial), None),
            "download": f"/download/{enrolment.token}", "filename": enrolment.filename,
            "passphrase": enrolment.passphrase, "commands": enrolment.commands}


async def list_requests(request: web.Request) -> web.Response:
    admin = session_of(request).admin
    return web.json_response({"requests": [
        r.public() for r in context(request).pki.queue.all() if actions.visible(admin, r.org)]})


async def post_approve(request: web.Request) -> web.Response:
    ctx = context(request)
    try:
        enrolment = actions.approve(ctx, session_of(request).admin, request.match_info["rid"])
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response(_enrolment_json(ctx, enrolment), status=201)


async def post_reject(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        decided = actions.reject(context(request), session_of(request).admin,
                                 request.match_info["rid"], str(data.get("reason") or ""))
    except actions.ActionError as exc:
        return _error(exc)
    return web.json_response({"request": decided.public()})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/session", get_session)
    r.add_get("/api/certificates", list_certificates)
    r.add_get("/api/certificates/{serial:[0-9A-Fa-f]{1,40}}", get_certificate)
    r.add_post("/api/certificates/{serial:[0-9A-Fa-f]{1,40}}/revoke", post_revoke)
    r.add_post("/api/enrol", post_enrol)
    r.add_post("/api/csr", post_csr)
    r.add_get("/api/associations", list_associations)
    r.add_post("/api/associations/{assoc}/abort", post_abort)
    r.add_get("/api/organizations", list_organizations)
    r.add_post("/api/organizations", post_organization)
    r.add_get("/api/activity", get_activity)
    r.add_get("/api/requests", list_requests)
    r.add_post("/api/requests/{rid:[0-9a-f]{1,32}}/approve", post_approve)
    r.add_post("/api/requests/{rid:[0-9a-f]{1,32}}/reject", post_reject)
    r.add_get("/api/policy", get_policy)
    r.add_post("/api/policy/check", post_policy_check)
