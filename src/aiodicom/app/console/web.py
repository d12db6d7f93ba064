"""The console's aiohttp application: security middleware, templates, static files.

Every response carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline code), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` (the
login link never leaves the site; "no-referrer" would make Chrome send ``Origin: null``) and
``Cache-Control: no-store``. Requests are refused when the Host is not one we serve (DNS
rebinding), when an Origin other than ours is presented (a cookie sent from another site),
without a session (pages redirect to /login, /api answers 401), and, for every
state-changing method, without the session's CSRF token (form field ``csrf`` or header
``X-CSRF-Token``). Handlers are in `views` (pages) and `api` (JSON).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from aiodicom.app.console.audit import ConsoleAudit
from aiodicom.app.console.auth import Session, Sessions, csrf_ok
from aiodicom.app.console.live import LiveAssociations
from aiodicom.app.console.pki_ops import PKI

__all__ = ["ConsoleContext", "make_app"]

log = logging.getLogger("aiodicom.console")

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC = ("/login", "/static/", "/favicon.ico")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True, kw_only=True)
class ConsoleContext:
    """Everything the handlers use, stored in the app as ``app[CONTEXT]``."""

    pki: PKI
    sessions: Sessions
    audit: ConsoleAudit
    live: LiveAssociations
    https: bool
    allowed_hosts: frozenset[str]
    """Host header values (host[:port]) we answer to."""
    policy_path: Path | None = None
    reload_trust: Callable[[], object] | None = None
    """The running server's trust reload (the CRL changed); None without a server here."""
    templates: Any = None
    publish_url: str | None = None
    """Object-store URL (``az://container/prefix``...) where the CA and CRL are published
    after each change (`aiodicom pki publish`), for nodes that share trust; None: local."""

    @property
    def cookie_name(self) -> str:
        return "__Host-aiodicom-console" if self.https else "aiodicom-console"


CONTEXT: web.AppKey[ConsoleContext] = web.AppKey("console", ConsoleContext)
SESSION: web.RequestKey[Session] = web.RequestKey("console.session", Session)


def context(request: web.Request) -> ConsoleContext:
    return request.app[CONTEXT]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    ctx = context(request)
    session = request.get(SESSION)
    template = ctx.templates.get_template(name)
    text = template.render(session=session, csrf=session.csrf if session else "",
                           path=request.path, **values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _own_origin(request: web.Request) -> str:
    return f"{'https' if context(request).https else 'http'}://{request.host}"


def _refuse(request: web.Request, status: int, why: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": why}, status=status)
    return web.Response(text=f"{status}: {why}\n", status=status, content_type="text/plain")


def _secure(ctx: ConsoleContext, headers: Any) -> None:
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes Chrome send Origin: null
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers.setdefault("Cache-Control", "no-store")
    if ctx.https:
        headers["Strict-Transport-Security"] = "max-age=31536000"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(context(request), exc.headers)
        raise
    _secure(context(request), response.headers)
    return response


@web.middleware
async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, Origin, session and CSRF checks (see the module docstring)."""
    ctx = context(request)
    if request.host.lower() not in ctx.allowed_hosts:
        return _refuse(request, 421, f"this console does not serve host {request.host!r}")
    origin = request.headers.get("Origin")
    if origin is not None and origin != _own_origin(request):
        return _refuse(request, 403, "cross-origin request refused")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return _refuse(request, 403, "cross-site request refused")
    if request.path.startswith(PUBLIC):
        return await handler(request)
    session = ctx.sessions.get(request.cookies.get(ctx.cookie_name))
    if session is None:
        if request.path.startswith("/api/"):
            return _refuse(request, 401, "no session: log in with the link the console "
                                         "printed, or as a console user at /login")
        raise web.HTTPSeeOther("/login")
    request[SESSION] = session
    if request.method not in SAFE_METHODS:
        presented = request.headers.get("X-CSRF-Token")
        if presented is None and request.content_type in (
                "application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            value = form.get("csrf")
            presented = value if isinstance(value, str) else None
        if not csrf_ok(session, presented):
            log.warning("console: %s %s refused: bad or missing CSRF token (session of %s)",
                        request.method, request.path, session.admin.name)
            return _refuse(request, 403, "missing or wrong CSRF token")
    return await handler(request)


def set_session_cookie(response: web.StreamResponse, ctx: ConsoleContext, sid: str) -> None:
    response.set_cookie(ctx.cookie_name, sid, httponly=True, samesite="Strict",
                        secure=ctx.https, path="/", max_age=8 * 3600)


def make_app(ctx: ConsoleContext) -> web.Application:
    """The console application (pages, /api, /static) over `ctx`."""
    import jinja2

    from aiodicom.app.console import api, views

    ctx.templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    app = web.Application(middlewares=[security_headers, gatekeeper],
                          client_max_size=256 * 1024)
    app[CONTEXT] = ctx
    views.add_routes(app)
    api.add_routes(app)
    app.router.add_static("/static/", HERE / "static", follow_symlinks=False)
    return app
