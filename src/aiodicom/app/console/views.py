"""The console's HTML pages (Jinja2 templates under templates/; no inline script)."""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from aiodicom.app.console import actions
from aiodicom.app.console.audit import read_activity
from aiodicom.app.console.auth import Admin, LoginThrottled
from aiodicom.app.console.policy_view import SERVICE_OF_OPERATION, check_policy, policy_rows
from aiodicom.app.console.web import (
    context,
    render,
    session_of,
    set_session_cookie,
)
from aiodicom.app.pki.revoke import REASON_CODES
from aiodicom.app.server.audit import Outcome

__all__ = ["add_routes"]

SORT_KEYS = ("subject", "organization", "not_after", "status", "serial")
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _peer(request: web.Request) -> str:
    return request.remote or ""


def _refused_login(request: web.Request, name: str, why: str) -> None:
    """A failed sign-in in the audit trail (name tried, address): guessing is seen."""
    context(request).audit.change(Admin(name=name, org=None, address=_peer(request)), "E",
                                  f"refused sign-in: {why}", event="login",
                                  outcome=Outcome.MINOR_FAILURE)


async def login_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    token = request.query.get("token")
    if token:
        opened = ctx.sessions.redeem(token, _peer(request))
        if opened is None:
            _refused_login(request, "login-link", "a used, expired or unknown login link")
            return render(request, "login.html", status=403, users=bool(ctx.sessions.users),
                          error="This login link was already used or has expired.")
        sid, session = opened
        ctx.audit.change(session.admin, "E", "signed in with the one-time login link",
                         event="login")
        response = _redirect("/certificates")
        set_session_cookie(response, ctx, sid)
        return response
    return render(request, "login.html", users=bool(ctx.sessions.users), error=None)


async def login_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await request.post()
    name, passcode = str(form.get("name") or ""), str(form.get("passcode") or "")
    try:
        opened = ctx.sessions.sign_in(name, passcode, _peer(request)) if name else None
    except LoginThrottled as exc:
        _refused_login(request, name[:64] or "-",
                       f"too many failed sign-ins, throttled for {exc.retry_after:.0f} s")
        wait = max(1, math.ceil(exc.retry_after))
        response = render(request, "login.html", status=429, users=True,
                          error=f"Too many failed sign-ins: try again in {wait} s.")
        response.headers["Retry-After"] = str(wait)
        return response
    if opened is None:
        _refused_login(request, name[:64] or "-", "an unknown user or a wrong passcode")
        return render(request, "login.html", status=403, users=bool(ctx.sessions.users),
                      error="Unknown user or wrong passcode.")
    sid, session = opened
    ctx.audit.change(session.admin, "E", "signed in with a passcode", event="login")
    response = _redirect("/certificates")
    set_session_cookie(response, ctx, sid)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    ctx.sessions.close(request.cookies.get(ctx.cookie_name, ""))
    response = _redirect("/login")
    response.del_cookie(ctx.cookie_name, path="/")
    return response


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/certificates")


async def certificates(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    q = request.query
    admin = session_of(request).admin
    rows = [r for r in ctx.pki.rows() if actions.visible(admin, r["organization"])]
    text = q.get("q", "").strip().lower()
    if text:
        rows = [r for r in rows if text in " ".join(
            [r["subject"], r["organization"] or "", *r["ae_titles"], *r["groups"],
             r["serial"], r["fingerprint_sha256"]]).lower()]
    status = q.get("status", "")
    if status in ("valid", "revoked", "expired"):
        rows = [r for r in rows if r["status"] == status]
    elif status == "expiring":
        rows = [r for r in rows if r["expiring"]]
    sort = q.get("sort", "not_after")
    sort = sort if sort in SORT_KEYS else "not_after"
    rows.sort(key=lambda r: str(r[sort] or ""), reverse=q.get("order") == "desc")
    return render(request, "certificates.html", codes=REASON_CODES, rows=rows,
                  q=q.get("q", ""), status_filter=status,
                  sort=sort, order=q.get("order", "asc"), sort_keys=SORT_KEYS, message=None)


async def enrol_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    return render(request, "enrol.html", orgs=ctx.pki.organizations(),
                  admin_org=session_of(request).admin.org, error=None, values={})


async def enrol_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = dict((await request.post()).items())
    try:
        queued = actions.maybe_queue(ctx, session_of(request).admin, "enrol", form)
        if queued is not None:
            raise web.HTTPSeeOther(f"/requests?filed={queued.id}")
        enrolment = actions.enrol(ctx, session_of(request).admin, form)
    except actions.ActionError as exc:
        return render(request, "enrol.html", status=exc.status, orgs=ctx.pki.organizations(),
                      admin_org=session_of(request).admin.org, error=str(exc), values=form)
    return render(request, "enrolled.html", e=enrolment)


async def csr_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = dict((await request.post()).items())
    upload = form.get("csr_file")
    pem = upload.file.read(64 * 1024) if isinstance(upload, web.FileField) else b""
    if not pem:
        pem = str(form.get("csr") or "").encode()
    try:
        queued = actions.maybe_queue(ctx, session_of(request).admin, "csr", form, pem)
        if queued is not None:
            raise web.HTTPSeeOther(f"/requests?filed={queued.id}")
        enrolment = actions.sign_csr(ctx, session_of(request).admin, pem, form)
    except actions.ActionError as exc:
        return render(request, "enrol.html", status=exc.status, orgs=ctx.pki.organizations(),
                      admin_org=session_of(request).admin.org, error=str(exc), values={})
    return render(request, "enrolled.html", e=enrolment)


async def download(request: web.Request) -> web.StreamResponse:
    try:
        item = actions.take_download(context(request), session_of(request).admin,
                                     request.match_info["token"])
    except actions.ActionError as exc:
        return web.Response(status=exc.status, text=f"{exc}\n")
    name = _SAFE_FILENAME.sub("_", item.filename)
    return web.Response(body=item.data, content_type=item.content_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


async def revoke_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await request.post()
    try:
        result = actions.revoke(ctx, session_of(request).admin, request.match_info["serial"],
                                str(form.get("reason") or ""), form.get("abort") == "on",
                                str(form.get("code") or "") or None)
    except actions.ActionError as exc:
        return web.Response(status=exc.status, text=f"not revoked: {exc}\n")
    try:
        await actions.publish_trust(ctx, session_of(request).admin)
    except actions.ActionError as exc:
        return web.Response(status=exc.status, text=f"{exc}\n")
    raise web.HTTPSeeOther(f"/certificates?q={result['serial']}")


async def connected(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    admin = session_of(request).admin
    rows = [r for r in ctx.live.rows() if actions.visible(admin, r["organization"])]
    return render(request, "connected.html", rows=rows,
                  server=ctx.live.server is not None)


async def abort_post(request: web.Request) -> web.StreamResponse:
    try:
        actions.abort_association(context(request), session_of(request).admin,
                                  int(request.match_info["assoc"]))
    except (ValueError, actions.ActionError) as exc:
        return web.Response(status=getattr(exc, "status", 400), text=f"not aborted: {exc}\n")
    raise web.HTTPSeeOther("/connected")


def _organizations(request: web.Request) -> dict[str, Any]:
    pki, admin = context(request).pki, session_of(request).admin
    return {"orgs": [o for o in pki.organizations() if actions.visible(admin, o["name"])],
            "rows": [r for r in pki.rows() if actions.visible(admin, r["organization"])]}


def _requests(request: web.Request) -> list[Any]:
    admin = session_of(request).admin
    return [r for r in reversed(context(request).pki.queue.all())
            if actions.visible(admin, r.org)]


async def organizations(request: web.Request) -> web.StreamResponse:
    return render(request, "organizations.html", **_organizations(request), error=None)


async def organization_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await request.post()
    try:
        actions.add_organization(ctx, session_of(request).admin, str(form.get("name") or ""))
        await actions.publish_trust(ctx, session_of(request).admin)
    except actions.ActionError as exc:
        return render(request, "organizations.html", status=exc.status,
                      **_organizations(request), error=str(exc))
    raise web.HTTPSeeOther("/organizations")


async def activity(request: web.Request) -> web.StreamResponse:
    q = request.query
    filters = {k: q.get(k, "") for k in ("org", "ae_title", "event")}
    entries = read_activity(context(request).audit.path, org=filters["org"],
                            ae_title=filters["ae_title"], event=filters["event"],
                            scope=session_of(request).admin.org)
    return render(request, "activity.html", entries=entries, filters=filters)


async def policy_page(request: web.Request) -> web.StreamResponse:
    answer: dict[str, Any] | None = None
    error = None
    values: dict[str, Any] = {}
    if request.method == "POST":
        values = dict((await request.post()).items())
        try:
            answer = check_policy(context(request).policy_path, values)
        except actions.ActionError as exc:
            error = str(exc)
    return render(request, "policy.html", policy=policy_rows(context(request).policy_path),
                  answer=answer, error=error, values=values,
                  operations=list(SERVICE_OF_OPERATION)[:5])


async def requests_page(request: web.Request) -> web.StreamResponse:
    return render(request, "requests.html", requests=_requests(request),
                  filed=request.query.get("filed", ""), error=None)


async def approve_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    try:
        enrolment = actions.approve(ctx, session_of(request).admin, request.match_info["rid"])
    except actions.ActionError as exc:
        return render(request, "requests.html", status=exc.status,
                      requests=_requests(request), filed="", error=str(exc))
    return render(request, "enrolled.html", e=enrolment)


async def reject_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await request.post()
    try:
        actions.reject(ctx, session_of(request).admin, request.match_info["rid"],
                       str(form.get("reason") or ""))
    except actions.ActionError as exc:
        return render(request, "requests.html", status=exc.status,
                      requests=_requests(request), filed="", error=str(exc))
    raise web.HTTPSeeOther("/requests")


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/favicon.ico", favicon)
    r.add_get("/login", login_page)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout)
    r.add_get("/", index)
    r.add_get("/certificates", certificates)
    r.add_post("/certificates/{serial:[0-9A-Fa-f]{1,40}}/revoke", revoke_post)
    r.add_get("/enrol", enrol_page)
    r.add_post("/enrol", enrol_post)
    r.add_post("/csr", csr_post)
    r.add_get("/download/{token:[A-Za-z0-9_-]{1,64}}", download)
    r.add_get("/connected", connected)
    r.add_post("/connected/{assoc:[0-9]{1,12}}/abort", abort_post)
    r.add_get("/organizations", organizations)
    r.add_post("/organizations", organization_post)
    r.add_get("/activity", activity)
    r.add_get("/requests", requests_page)
    r.add_post("/requests/{rid:[0-9a-f]{1,32}}/approve", approve_post)
    r.add_post("/requests/{rid:[0-9a-f]{1,32}}/reject", reject_post)
    r.add_get("/policy", policy_page)
    r.add_post("/policy", policy_page)
